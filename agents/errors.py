"""The error every part of symoe raises for problems a user can fix.

The CLI prints such an error as one line and exits with status 2; anything else is a bug.
"""


class SymoeError(Exception):
    """A problem the user can fix; the message says what to do."""
