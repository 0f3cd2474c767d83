"""``python -m orchestrator.cli``: the ``symoe`` command."""

from orchestrator.cli import main

main()
