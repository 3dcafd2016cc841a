"""A warm process that starts each DVC stage as a fork, so a run imports its libraries once.

Every stage is a new ``python -m stages.<name>`` process, and before it reads a byte of data it
imports what it needs: torch, scikit-learn, SciPy, pandas, matplotlib, MLflow, Great
Expectations. On the 2-core CPUs this project is measured on, that is 2-7 s per stage and about
a third of a default run on ~1,000 photos (``benchmarks/startup.py``, ``docs/BENCHMARKS.md``).
:func:`serving` starts one server that imports those libraries once (:data:`PRELOAD`), for as
long as a ``dvc repro`` runs; each stage process then hands itself over to it at its first line
(``stages/__init__.py`` calls :func:`hand_off`) and the server forks a copy that already holds
the libraries, in which the stage runs exactly as ``python -m`` would have run it: the caller's
arguments, folder, environment, ``sys.path``, stdin/stdout/stderr, exit status and Ctrl-C.

What keeps this from ever running stale code: the server imports third-party libraries only,
never this project's code; every fork drops any ``petsml``/``stages``/``pipelines`` module and
imports them afresh from the caller's ``sys.path``, as a new process would. A caller whose
interpreter, ``sys.path``, flags or import-time settings (thread counts, CUDA, matplotlib,
hash seed: :data:`SENSITIVE`) differ from the server's runs cold, as before. Nothing requires the
server: plain ``dvc repro`` runs every stage cold; ``pets run``, ``make run``, the Prefect flows
and the test suite start one (``PETS_STAGE_SERVER=off`` turns it off).

The server lives only inside :func:`serving` (and dies with the process that started it); it is
Linux/Unix only (``fork``), and off on macOS, where forking after importing system frameworks is
unsafe.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ENV = "PETS_STAGE_SERVER"  # the socket of the running server; "off" disables serving()
# Imported once by the server: the slow imports of the stages (each 0.1-1.6 s on 2 cores).
# A missing one is skipped. matplotlib.pyplot is left out: it picks a GUI backend on import.
PRELOAD = (
    "numpy", "pandas", "pyarrow", "yaml", "pydantic", "PIL.Image", "tqdm", "filelock",
    "scipy.optimize", "scipy.special", "scipy.stats", "scipy.fft",
    "sklearn.linear_model", "sklearn.preprocessing", "sklearn.model_selection",
    "torch", "torch.nn", "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
    "mlflow", "mlflow.store.tracking.sqlalchemy_store", "mlflow.pyfunc", "great_expectations",
)  # fmt: skip
# Settings a library reads when it is imported (thread pools, devices, backends, the hash seed):
# a caller whose value differs from the server's runs cold.
SENSITIVE = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "TORCH", "PYTORCH_", "CUDA_",
             "MPL", "LD_", "GX_", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONDEVMODE")  # fmt: skip
OWN_PACKAGES = ("petsml", "stages", "pipelines")  # always imported afresh in the fork
STARTUP_TIMEOUT_S = 120.0
_HEADER = struct.Struct("!I")
_SERVER_IDENTITY: dict = {}  # the server's own, taken before it imports anything


def _identity() -> dict:
    """What must match between a caller and the server for a fork to equal a fresh process."""
    return {
        "executable": sys.executable,
        "version": sys.version,
        "modules": _origins(),
        # code run at start-up (a sitecustomize on PYTHONPATH) would not run in the fork
        "site": {
            name: getattr(sys.modules.get(name), "__file__", None)
            for name in ("sitecustomize", "usercustomize")
        },  # fmt: skip
        "flags": list(sys.flags),
        "xoptions": {k: str(v) for k, v in sys._xoptions.items()},
        "warnoptions": list(sys.warnoptions),
        "env": {k: v for k, v in os.environ.items() if k.startswith(SENSITIVE)},
    }


def _origins() -> dict[str, str | None]:
    """Where each preloaded top-level package would be imported from (found, not imported)."""
    from importlib.util import find_spec

    found = {}
    for name in sorted({module.split(".", 1)[0] for module in PRELOAD}):
        try:
            spec = find_spec(name)
        except (ImportError, ValueError):
            spec = None
        found[name] = None if spec is None else spec.origin
    return found


# --------------------------------------------------------------------------- the caller


def _stage_module() -> tuple[str, list[str]] | None:
    """``(module, args)`` when this interpreter is resolving ``python -m stages.<name> ...``."""
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv:  # -m sets argv[0] to "-m" while importing
        return None
    at = argv.index("-m")
    if at + 1 >= len(argv) or not argv[at + 1].startswith("stages."):
        return None
    return argv[at + 1], argv[at + 2 :]


def _recv_line(conn: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


def hand_off() -> None:
    """Run this ``python -m stages.<name>`` in the server's fork and exit with its status.

    Returns (and the stage runs here, cold) when no server is set, it cannot be reached, or it
    answers that this interpreter differs from its own."""
    path = os.environ.get(ENV, "")
    stage = _stage_module()
    if not path or path == "off" or stage is None or not os.path.exists(path):
        return
    module, args = stage
    request = {
        "module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ),
        "sys_path": sys.path, "umask": _umask(), "identity": _identity(),
        "stdio": [{"encoding": f.encoding, "errors": f.errors, "line_buffering": f.line_buffering,
                   "write_through": f.write_through} for f in (sys.stdout, sys.stderr)],
    }  # fmt: skip
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        body = json.dumps(request).encode()
        socket.send_fds(conn, [_HEADER.pack(len(body))], [0, 1, 2])
        conn.sendall(body)
        answer = _recv_line(conn)
    except OSError:
        conn.close()
        return
    if not answer or "pid" not in answer:  # {"cold": why}: run here
        conn.close()
        return
    child = int(answer["pid"])

    def forward(signum, _frame) -> None:
        with suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        done = _recv_line(conn)
    except OSError:
        done = None
    if done is None or "exit" not in done:
        print(f"\nERROR [{module}]: the stage process ended without an exit status",
              file=sys.stderr)  # fmt: skip
        os._exit(1)
    os._exit(int(done["exit"]))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- the server


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {message}", file=sys.stderr, flush=True)


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
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    msg, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    (size,) = _HEADER.unpack(msg)
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
        print(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {command}: forked in "
              f"{request['cwd']}", file=log)  # fmt: skip

    def watch() -> None:  # the caller died (killed, not Ctrl-C): so does the stage
        with suppress(OSError):
            conn.recv(1)
        os.kill(os.getpid(), signal.SIGTERM)

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


def serve(path: str, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, then fork a child per caller until told to stop (SIGTERM) or the
    process that started the server is gone. The socket appears only once the imports are
    done, so a stage that starts earlier simply runs cold."""
    parent = os.getppid()
    started = time.perf_counter()
    _SERVER_IDENTITY.update(_identity())  # before the imports, which may set variables
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - an optional library: the stage imports it
            _log(f"preload {name}: {type(error).__name__}: {error}")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pending = f"{path}.{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(pending)
    listener.listen(16)
    listener.settimeout(2.0)
    os.rename(pending, path)
    _log(f"ready in {time.perf_counter() - started:.1f} s")
    try:
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            conn.settimeout(None)
            if os.fork() == 0:
                try:
                    _child(conn, listener)
                finally:
                    os._exit(1)
            conn.close()
    finally:
        with suppress(OSError):
            os.unlink(path)


def enabled() -> bool:
    """Whether :func:`serving` starts a server here: fork exists, not macOS, not switched off,
    and no server is already serving this process tree."""
    return hasattr(os, "fork") and sys.platform != "darwin" and not os.environ.get(ENV)


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


if __name__ == "__main__":
    serve(sys.argv[1], tuple(sys.argv[2:]))
