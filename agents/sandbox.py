"""Running a Python function an LLM wrote (program-of-thought), bounded: best effort, not a jail.

This module owns one job: ``run_program(source)`` runs ``source`` in a separate, fresh
interpreter, calls its ``solution()`` (no arguments) and returns what it returned, or one line
saying why it stopped. It knows nothing of experts, prompts or answers.

The layers, each a backstop for the one before:

* **a fresh process** ``python -I -S -B`` (no user site, no site-packages, no ``PYTHON*``
  variables, no bytecode writes) with an environment of ``PATH`` and ``LANG`` only (no
  inherited variable, so no API key), stdin from ``/dev/null``, its own session (process
  group) and a new temporary folder as its working directory, removed afterwards;
* **resource limits** set in the child before ``exec``: CPU seconds, address space (memory),
  file size, no new processes (``RLIMIT_NPROC``: the user's current count), open files, no
  core dumps; the parent enforces the wall-clock limit and caps what it reads from
  stdout/stderr (over the cap: the process group is killed);
* **an audit hook** (``sys.addaudithook``) installed by a small bootstrap before the program
  is compiled: it refuses processes (``subprocess``, ``os.system``, ``os.exec*``,
  ``os.spawn*``, ``os.posix_spawn``, ``os.fork``, ``pty``), threads, sockets of any family,
  ``ctypes`` and native code from outside the standard library, signals to other
  processes, changing its limits, ``gc`` introspection, symlinks, and file access outside
  bounds: writing (``open`` for writing, ``os.remove``/``rename``/``mkdir``/``chmod``/...)
  anywhere but its folder, reading anywhere but its folder, the standard library and the
  time-zone database. Paths are resolved (symlinks followed) with functions captured before
  the program ran. A refusal ends the process at once (no ``except`` lets it probe on) and
  is reported as ``refused: ...``.

Best effort: an audit hook runs inside the process it guards, so a determined program may
get around it (by exploiting an interpreter bug, say); the resource limits, the empty
environment and the throw-away folder are what is left then. As root the kernel does not
apply ``RLIMIT_NPROC`` and file permissions do not hold, so there the hook is the only
guard against forking and against writing outside the folder. For hostile input at scale,
run symoe itself in a container or VM.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: the program text, written into the run's folder (the bootstrap reads it before the hook)
PROGRAM_FILE = "program.py"
#: exit status of a child that the audit hook stopped (the bootstrap's ``exit_(113)``)
REFUSED_EXIT = 113
#: writes (files opened for writing, mkdir, rename, ...) one run may do: bounds the disk it
#: can fill (each file is capped by ``file_size_mb``) and how deep a tree it can leave
MAX_WRITES = 256
#: open file descriptors in the child
MAX_OPEN_FILES = 64
#: the environment of the child: nothing inherited
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
#: bytes of stderr kept (only for a child that died without a result)
STDERR_KEPT = 4096

# The bootstrap, run with ``python -I -S -B -c BOOTSTRAP record_fd entry cap max_writes`` in the
# run's folder. It imports only what an interpreter has loaded anyway (json aside), reads the
# program, captures every function its hook uses (the program may monkeypatch os, json or
# builtins afterwards), installs the hook, and only then compiles and runs the program. The
# result is one JSON line on the record descriptor: {"ok": true, "value": ...} or {"ok": false,
# "error" | "refused" | "memory" | "fsize" | "over": ...}.
BOOTSTRAP = r'''
import _imp, _thread, json, os, sys


def _sandbox():
    record_fd, entry, cap, max_writes = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    write, exit_, dumps, lstat, stat, readlink, getcwd = (
        os.write, os._exit, json.dumps, os.lstat, os.stat, os.readlink, os.getcwd)
    str_, bytes_, int_, type_, len_ = str, bytes, int, type, len
    OSError_, BaseException_ = OSError, BaseException
    out, err = sys.stdout, sys.stderr
    me = os.getpid()
    root = os.path.realpath(getcwd())
    libs = tuple(p for p in dict.fromkeys(os.path.realpath(p) for p in sys.path if p) if p != "/")
    zoneinfo = ("/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo", "/etc/zoneinfo")
    readable = (root, *libs, *(os.path.realpath(p) for p in zoneinfo))
    devices = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
    writing_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    writes = [0]
    with open("program.py", encoding="utf-8") as handle:
        source = handle.read()

    def record(fields):
        for stream in (out, err):
            try:
                stream.flush()
            except BaseException_:
                pass
        data = (dumps(fields) + "\n").encode()
        while data:
            data = data[write(record_fd, data):]

    def refuse(what):
        try:
            record({"ok": False, "refused": what})
        finally:
            exit_(113)

    def resolve(path):
        """``path`` absolute with every symlink followed (os.path.realpath, not strict)."""
        if not str_.startswith(path, "/"):
            path = getcwd() + "/" + path
        todo = [p for p in str_.split(path, "/")[::-1] if p and p != "."]
        done = []
        hops = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join(done + [name])
            try:
                mode = lstat(here).st_mode
            except OSError_:
                done.append(name)
                continue
            if mode & 0o170000 == 0o120000:
                hops += 1
                if hops > 40:
                    refuse("a symlink loop")
                target = readlink(here)
                if str_.startswith(target, "/"):
                    done = []
                todo.extend(p for p in str_.split(target, "/")[::-1] if p and p != ".")
            else:
                done.append(name)
        return "/" + "/".join(done)

    def within(real, folders):
        for folder in folders:
            if real == folder or str_.startswith(real, folder + "/"):
                return True
        return False

    def check(path, writing, what="write outside its folder"):
        if type_(path) is int_:  # a descriptor it already holds
            return None
        if type_(path) is bytes_:
            path = bytes_.decode(path, "utf-8", "surrogateescape")
        if type_(path) is not str_:
            refuse("a path that is not a str")
        real = resolve(path)
        if writing:
            if not (within(real, (root,)) or real == "/dev/null"):
                refuse(what + " (" + real + ")")
            writes[0] += 1
            if writes[0] > max_writes:
                refuse("more than " + str_(max_writes) + " writes")
        elif not (within(real, readable) or real in devices):
            refuse("read outside its folder (" + real + ")")
        return real

    processes = {"subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "pty.spawn",
                 "os.startfile", "os.popen", "webbrowser.open"}
    fixed = {"os.fork": "fork", "os.forkpty": "fork", "resource.setrlimit": "changing its limits",
             "resource.prlimit": "changing its limits", "gc.get_objects": "gc introspection",
             "gc.get_referrers": "gc introspection", "gc.get_referents": "gc introspection",
             "os.symlink": "symlink", "sqlite3.enable_load_extension": "sqlite extension",
             "sqlite3.load_extension": "sqlite extension", "urllib.Request": "network",
             "sys.remote_exec": "remote exec"}
    blocked_imports = {"_posixsubprocess": "subprocess", "_ctypes": "ctypes", "ctypes": "ctypes",
                       "_xxsubinterpreters": "subinterpreter", "_xxinterpchannels": "subinterpreter",
                       "_interpreters": "subinterpreter", "_testcapi": "internal test module",
                       "_testinternalcapi": "internal test module", "_testmultiphase": "internal test module",
                       "_testsinglephase": "internal test module", "_testbuffer": "internal test module",
                       "_ctypes_test": "ctypes", "_thread": "thread"}
    # event -> positions of its path arguments (all written to)
    path_writes = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
                   "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
                   "os.chflags": (0,), "os.lchflags": (0,), "os.lchmod": (0,), "os.setxattr": (0,),
                   "os.removexattr": (0,), "shutil.rmtree": (0,), "os.mkfifo": (0,), "os.mknod": (0,)}
    path_reads = {"os.listdir": 0, "os.scandir": 0, "os.listxattr": 0, "os.getxattr": 0}

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = bool(flags & writing_flags)
            real = check(path, writing)
            if mode is None and real is not None:  # os.open: no descriptors of folders (dir_fd=)
                try:
                    is_folder = stat(real).st_mode & 0o170000 == 0o040000
                except OSError_:
                    is_folder = False
                if is_folder:
                    refuse("a descriptor of a folder (" + real + ")")
        elif event in path_writes:
            for i in path_writes[event]:
                check(args[i], True)
        elif event in path_reads:
            if args[path_reads[event]] is not None:
                check(args[path_reads[event]], False)
        elif event in processes:
            refuse("subprocess")
        elif event in fixed:
            refuse(fixed[event])
        elif event == "import":
            if args[0] in blocked_imports:
                refuse(blocked_imports[args[0]])
            if args[1] is not None:  # native code: only the standard library's
                real = check(args[1], False)
                if real is not None and not within(real, libs):
                    refuse("native code from " + real)
        elif str_.startswith(event, "socket.") and event != "socket.gethostname":
            family = args[1] if event == "socket.__new__" and len_(args) > 1 else 2
            refuse("network socket" if family in (2, 10) else "socket")
        elif str_.startswith(event, "ctypes."):
            refuse("ctypes")
        elif event == "os.link":
            check(args[0], True, "a link to a file outside its folder")
            check(args[1], True)
        elif event in ("os.kill", "os.killpg"):
            if args[0] != me:
                refuse("a signal to another process")
        elif event == "sqlite3.connect":
            database = args[0]
            if type_(database) is str_ and (database == "" or database == ":memory:"):
                return
            if type_(database) is str_ and str_.startswith(database, "file:"):
                refuse("an sqlite URI")
            check(database, True)

    def no_threads(*args, **kwargs):
        refuse("thread")

    create_builtin = _imp.create_builtin

    def guarded_create_builtin(spec):
        name = spec.name
        if type_(name) is not str_:
            refuse("an odd module spec")
        if name in blocked_imports:
            refuse(blocked_imports[name])

        class Spec:
            pass

        trusted = Spec()
        trusted.name = name
        return create_builtin(trusted)

    _thread.start_new_thread = _thread.start_new = no_threads
    _imp.create_builtin = guarded_create_builtin
    sys.addaudithook(hook)
    del hook, guarded_create_builtin, no_threads

    def convert(value):
        if value is None:
            return None
        if type(value) is str:
            return value
        if isinstance(value, (bool, int, float, list, tuple, dict)):
            try:
                return json.dumps(value, allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError):
                pass
        return str(value)

    def describe(exc):
        try:
            message = str(exc)
        except BaseException_:
            message = ""
        text = " ".join((type(exc).__name__ + (": " + message if message else "")).split())
        line, tb = None, exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "program.py":
                line = tb.tb_lineno
            tb = tb.tb_next
        if len(text) > 300:
            text = text[:297] + "..."
        return text + (" (line " + str_(line) + ")" if line is not None and not isinstance(exc, SyntaxError) else "")

    try:
        namespace = {"__name__": "program", "__builtins__": __builtins__}
        exec(compile(source, "program.py", "exec"), namespace)
        function = namespace.get(entry)
        if not callable(function):
            raise LookupError("the program defines no function " + repr(entry))
        text = convert(function())
    except MemoryError:
        record({"ok": False, "memory": True})
    except OSError as exc:
        record({"ok": False, "fsize": True} if exc.errno == 27 else {"ok": False, "error": describe(exc)})
    except BaseException as exc:
        record({"ok": False, "error": describe(exc)})
    else:
        if text is not None and len(text.encode("utf-8", "replace")) > cap:
            record({"ok": False, "over": True})
        else:
            record({"ok": True, "value": text})
    exit_(0)


_sandbox()
'''


class SandboxLimits(BaseModel):
    """What one run may use. The child cannot raise them (soft and hard limits are set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_seconds: int = Field(default=5, ge=1, description="CPU time (RLIMIT_CPU)")
    wall_seconds: float = Field(default=10.0, gt=0, description="wall-clock time, enforced by the parent")
    memory_mb: int = Field(default=512, ge=64, description="address space (RLIMIT_AS)")
    file_size_mb: int = Field(default=1, ge=0, description="size of any one file it writes (RLIMIT_FSIZE)")
    processes: int = Field(default=0, ge=0, description="new processes or threads beyond itself (RLIMIT_NPROC)")
    output_bytes: int = Field(default=64 * 1024, ge=1024, description="stdout, stderr and the return value, each")


class SandboxResult(BaseModel):
    """How one run ended. ``value`` is the return value as text; ``reason`` one line when not ok."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    #: None (returned None, or failed); a str as is; JSON for numbers, bools, lists, dicts; else str()
    value: str | None = None
    #: what it printed, at most ``output_bytes`` bytes
    stdout: str = ""
    #: why it stopped: "timed out after 10 s", "refused: subprocess", "error: ZeroDivisionError: ..."
    reason: str | None = None
    seconds: float = 0.0


def run_program(source: str, entry: str = "solution", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``source`` in a bounded child interpreter and call its ``entry()``.

    Never raises for anything the program does; raises ``ValueError`` for an ``entry`` that
    is not an identifier.
    """
    if not entry.isidentifier():
        raise ValueError(f"entry must be a Python identifier, not {entry!r}")
    limits = limits or SandboxLimits()
    start = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="symoe-sandbox-"))
    try:
        (folder / PROGRAM_FILE).write_bytes(source.encode("utf-8", "replace"))
        result = _run(folder, entry, limits, start)
    finally:
        _remove(folder)
    return result.model_copy(update={"seconds": round(time.monotonic() - start, 3)})


def _size(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _user_tasks() -> int:
    """Processes and threads of this real user now (what RLIMIT_NPROC counts), best effort."""
    uid, count = str(os.getuid()), 0
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                fields = dict(line.split(":", 1) for line in Path(entry.path, "status").read_text().splitlines()
                              if ":" in line)
            except (OSError, ValueError):
                continue
            if fields.get("Uid", "").split()[:1] == [uid]:
                count += int(fields.get("Threads", "1").strip() or 1)
    return count


def _limits(limits: SandboxLimits) -> list[tuple[int, tuple[int, int]]]:
    """(resource, (soft, hard)) for the child, each hard limit no higher than this process's."""
    tasks = _user_tasks() + 1 + limits.processes  # the child itself, then what it may start
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),  # SIGXCPU, then SIGKILL
        (resource.RLIMIT_AS, limits.memory_mb << 20, limits.memory_mb << 20),
        (resource.RLIMIT_FSIZE, limits.file_size_mb << 20, limits.file_size_mb << 20),
        (resource.RLIMIT_NPROC, tasks, tasks),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    out = []
    for which, soft, hard in wanted:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        out.append((which, (soft, hard)))
    return out


def _run(folder: Path, entry: str, limits: SandboxLimits, start: float) -> SandboxResult:
    rlimits = _limits(limits)

    def in_child() -> None:  # between fork and exec: system calls only
        for which, value in rlimits:
            resource.setrlimit(which, value)

    cap = limits.output_bytes
    read_fd, write_fd = os.pipe()
    command = [sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, str(write_fd), entry, str(cap), str(MAX_WRITES)]
    try:
        child = subprocess.Popen(command, cwd=folder, env=CHILD_ENV, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(write_fd,),
                                 start_new_session=True, preexec_fn=in_child)
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(read_fd)
        return SandboxResult(ok=False, reason=f"error: the sandbox could not start ({exc})")
    finally:
        os.close(write_fd)
    assert child.stdout is not None and child.stderr is not None
    out_fd, err_fd = child.stdout.fileno(), child.stderr.fileno()
    caps = {out_fd: cap, err_fd: cap, read_fd: cap + 4096}
    buffers = {fd: bytearray() for fd in caps}
    deadline = start + limits.wall_seconds
    stopped: str | None = None  # why the parent killed it
    status, cpu = 0, 0.0
    try:
        with selectors.DefaultSelector() as selector:
            for fd in caps:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() and stopped is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = "timeout"
                    break
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    buffers[key.fd] += chunk
                    if len(buffers[key.fd]) > caps[key.fd]:
                        stopped = "output"
                        break
        if stopped is None and not _exited(child.pid, deadline):
            stopped = "timeout"
    finally:
        # kill the whole group while the leader is unreaped (its pid cannot be reused yet)
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        child.stdout.close()
        child.stderr.close()
        os.close(read_fd)
    stdout = _text(bytes(buffers[out_fd]), cap)
    reason, value = _reason(limits, stopped, child.returncode, cpu, bytes(buffers[read_fd]), bytes(buffers[err_fd]))
    return SandboxResult(ok=reason is None, value=value if reason is None else None, stdout=stdout, reason=reason)


def _exited(pid: int, deadline: float) -> bool:
    """Wait (without reaping) until ``pid`` has exited or ``deadline`` passes; True if it exited."""
    pause = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)


def _text(data: bytes, cap: int) -> str:
    """``data`` decoded, at most ``cap`` bytes once encoded again."""
    text = data[:cap].decode("utf-8", "replace")
    encoded = text.encode("utf-8")
    return text if len(encoded) <= cap else encoded[:cap].decode("utf-8", "ignore")


def _records(data: bytes) -> list[dict[str, object]]:
    found = []
    for line in data.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                found.append(record)
    return found


def _reason(limits: SandboxLimits, stopped: str | None, code: int | None, cpu: float, record_bytes: bytes,
            stderr: bytes) -> tuple[str | None, str | None]:
    """(one-line reason or None when it succeeded, its value)."""
    records = _records(record_bytes)
    refused = next((r["refused"] for r in records if r.get("refused")), None)
    if refused is not None:
        return f"refused: {refused}", None
    if stopped == "output":
        return f"output over {_size(limits.output_bytes)}", None
    if stopped == "timeout":
        return f"timed out after {limits.wall_seconds:g} s", None
    if records:
        last = records[-1]
        if last.get("ok") is True:
            value = last.get("value")
            return None, value if isinstance(value, str) else None
        if last.get("memory"):
            return f"memory limit ({limits.memory_mb} MB)", None
        if last.get("fsize"):
            return f"file size limit ({limits.file_size_mb} MB)", None
        if last.get("over"):
            return f"return value over {_size(limits.output_bytes)}", None
        if last.get("error"):
            return f"error: {last['error']}", None
    code = 0 if code is None else code
    if code == REFUSED_EXIT:
        return "refused (its record was lost)", None
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu >= limits.cpu_seconds - 0.05):
        return f"CPU time limit ({limits.cpu_seconds} s)", None
    if code == -signal.SIGXFSZ:
        return f"file size limit ({limits.file_size_mb} MB)", None
    if code < 0:
        return f"killed by {signal.Signals(-code).name}", None
    last_line = next((s for s in reversed(stderr[-STDERR_KEPT:].decode("utf-8", "replace").splitlines())
                      if s.strip()), "")
    return f"error: it ended without a result (exit status {code}){': ' + last_line if last_line else ''}", None


def _remove(folder: Path) -> None:
    """Remove the run's folder, whatever modes the program left on what it made inside."""
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)
    stack = [folder]
    while stack:  # make every real folder (never a symlink's target) listable and writable
        here = stack.pop()
        with contextlib.suppress(OSError), os.scandir(here) as entries:
            for item in entries:
                if item.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.chmod(item.path, 0o700)
                    stack.append(Path(item.path))
    with contextlib.suppress(Exception):
        shutil.rmtree(folder, ignore_errors=True)
