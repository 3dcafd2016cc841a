"""A warm process that starts each DVC stage as a fork, so a run imports its libraries once.

Every stage is a new ``python -m stages.<name>`` process, and before it reads a byte of data it
imports what it needs: torch, scikit-learn, SciPy, pandas, matplotlib, MLflow, Great
Expectations. On the 2-core CPUs this project is measured on, that is 2-7 s per stage and about
a third of a default run on ~1,000 photos (``docs/BENCHMARKS.md``). A stage server imports those
libraries once (:data:`PRELOAD`); each stage process hands itself over to it at its first line
(``stages/__init__.py`` calls :func:`hand_off`) and the server forks a copy that already holds
the libraries, in which the stage runs exactly as ``python -m`` would have run it: the caller's
arguments, folder, environment, ``sys.path``, stdin/stdout/stderr, exit status and Ctrl-C (the
caller forwards it; a caller killed outright takes its fork with it).

Two servers, the same forks:
- ``pets run`` / ``make run`` (:func:`serving`): one for the run, stopped when it ends, named by
  ``PETS_STAGE_SERVER`` (the test suite starts one per worker the same way).
- plain ``dvc repro``: the first stage that finds no server starts a shared one in the
  background (:func:`shared_socket`: one per user and interpreter set-up) and runs cold; the
  later stages are forks. It stops after :data:`IDLE_S` seconds without a stage
  (``PETS_STAGE_SERVER_IDLE``). ``PETS_STAGE_SERVER=off`` turns both off: every stage cold.

What keeps this from ever running stale code: the server imports third-party libraries only,
never this project's code; every fork drops any ``petsml``/``stages``/``pipelines`` module and
imports them afresh from the caller's ``sys.path``, as a new process would. A caller whose
interpreter, library locations, flags, start-up code or import-time settings (thread counts,
CUDA, matplotlib, hash seed: :data:`SENSITIVE`) differ from the server's runs cold. Unix only
(``fork``), and off on macOS, where forking after importing system frameworks is unsafe.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from petsml.stage_client import ENV, HEADER, PRELOAD, enabled, identity

OWN_PACKAGES = ("petsml", "stages", "pipelines")  # always imported afresh in the fork
STARTUP_TIMEOUT_S = 120.0
_SERVER_IDENTITY: dict = {}  # the server's own, taken before it imports anything


# --------------------------------------------------------------------------- the server


def _log(message: str, to=None) -> None:
    """A line of the server's log (its stderr, or ``to``: a fork's copy of it)."""
    print(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {message}", file=to or sys.stderr,
          flush=True)  # fmt: skip


def _stdio(request: dict) -> None:
    """stdin/stdout/stderr on the caller's descriptors, buffered as the caller's were."""
    import io

    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
    streams = []
    for fd, spec in zip((1, 2), request["stdio"], strict=True):
        raw = io.FileIO(fd, "w", closefd=False)
        streams.append(io.TextIOWrapper(
            raw if spec["write_through"] else io.BufferedWriter(raw),
            encoding=spec["encoding"], errors=spec["errors"],
            line_buffering=spec["line_buffering"], write_through=spec["write_through"],
        ))  # fmt: skip
    sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _exit_code(error: BaseException | None) -> int:
    import traceback

    if error is None:
        return 0
    if isinstance(error, SystemExit):
        code = error.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        print(code, file=sys.stderr)
        return 1
    traceback.print_exception(error)
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def _child(conn: socket.socket, listener: socket.socket) -> None:
    """In the fork: become the caller's ``python -m`` process, run the stage, report, exit."""
    import runpy

    listener.close()
    os.setpgid(0, 0)  # the stage and what it starts: one group, signalled together as in a shell
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    msg, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, 3)
    (size,) = HEADER.unpack(msg)
    body = b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    request = json.loads(body)
    theirs = request["identity"]
    differs = [key for key in _SERVER_IDENTITY if _SERVER_IDENTITY[key] != theirs.get(key)]
    if "env" in differs:
        mine, env = _SERVER_IDENTITY["env"], theirs.get("env", {})
        differs[differs.index("env")] = "env " + " ".join(
            sorted(k for k in {*mine, *env} if mine.get(k) != env.get(k))
        )
    if differs or len(fds) != 3:
        conn.sendall(json.dumps({"cold": f"differs: {', '.join(differs)}"}).encode() + b"\n")
        _log(f"{request['module']}: runs cold ({', '.join(differs)} differ)")
        os._exit(0)
    log_fd = os.dup(2)  # the server's log, before stderr becomes the caller's
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    sys.path[:] = request["sys_path"]
    for name in [n for n in sys.modules if n.split(".", 1)[0] in OWN_PACKAGES]:
        del sys.modules[name]
    importlib.invalidate_caches()
    _stdio(request)
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    with os.fdopen(log_fd, "w") as log:
        command = " ".join([request["module"], *request["args"]])
        _log(f"{command}: forked in {request['cwd']}", to=log)

    def watch() -> None:  # the caller died (killed, not Ctrl-C): so do the stage and its own
        with suppress(OSError):
            conn.recv(1)
        os.killpg(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="pets-caller-watch").start()
    sys.argv = [request["module"], *request["args"]]
    error: BaseException | None = None
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except BaseException as raised:  # noqa: BLE001 - every ending becomes the exit status
        error = raised
    code = _exit_code(error)
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        with suppress(OSError):
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        os._exit(code)


def serve(path: str, preload: tuple[str, ...] = PRELOAD, idle_s: float | None = None) -> None:
    """Import ``preload``, then fork a child per caller until told to stop (SIGTERM), until the
    process that started it is gone (under :func:`serving`) or, with ``idle_s`` (the shared
    server), after that long without a caller, or once another server took over its socket.
    The socket appears only once the imports are done: a stage that starts earlier runs cold."""
    parent = os.getppid()
    started = time.perf_counter()
    _SERVER_IDENTITY.update(identity())  # before the imports, which may set variables
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - an optional library: the stage imports it
            _log(f"preload {name}: {type(error).__name__}: {error}")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pending = os.path.join(os.path.dirname(path), f".{os.getpid()}")  # short: see MAX_SOCKET_PATH
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(pending)
    listener.listen(16)
    listener.settimeout(1.0)
    os.rename(pending, path)
    with suppress(OSError):
        os.unlink(f"{path}.starting")  # the shared server's "on its way" marker
    mine = os.stat(path).st_ino
    _log(f"ready in {time.perf_counter() - started:.1f} s")
    last = time.monotonic()

    def wanted() -> bool:
        if idle_s is None:
            return os.getppid() == parent
        try:
            ours = os.stat(path).st_ino == mine
        except OSError:
            ours = False
        return ours and time.monotonic() - last < idle_s

    try:
        while wanted():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            last = time.monotonic()
            conn.settimeout(None)
            if os.fork() == 0:
                try:
                    _child(conn, listener)
                finally:
                    os._exit(1)
            conn.close()
    finally:
        with suppress(OSError):
            if os.stat(path).st_ino == mine:
                os.unlink(path)
        _log("stopped")


@contextmanager
def serving(
    log: str | Path | None = None, preload: tuple[str, ...] = PRELOAD
) -> Iterator[str | None]:
    """Start a stage server for the block and point ``PETS_STAGE_SERVER`` at it (inherited by
    ``dvc repro`` and its stages); yields the socket path, or None when not enabled. The server
    writes a line per stage it forks to ``log`` (default: discarded)."""
    if not enabled():
        yield None
        return
    folder = tempfile.mkdtemp(prefix="pets-stages-")
    path = os.path.join(folder, "server.sock")
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "petsml.stage_server", path, *preload],
        stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=folder,
    )  # fmt: skip
    os.environ[ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(ENV, None)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if log:
            out.close()
        for leftover in Path(folder).iterdir():
            leftover.unlink()
        os.rmdir(folder)


def wait_ready(path: str, timeout_s: float = STARTUP_TIMEOUT_S) -> bool:
    """Block until the server at ``path`` listens (tests and benchmarks want it warm)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str]) -> None:
    """``python -m petsml.stage_server [--idle SECONDS] SOCKET [MODULE ...]``."""
    idle = None
    if argv[:1] == ["--idle"]:
        idle, argv = float(argv[1]), argv[2:]
    serve(argv[0], tuple(argv[1:]), idle)


if __name__ == "__main__":
    main(sys.argv[1:])
