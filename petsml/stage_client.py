"""The stage's side of the stage server: hand this ``python -m stages.<name>`` to a warm fork.

``stages/__init__.py`` calls :func:`hand_off` first thing, before any slow import; see
:mod:`petsml.stage_server` for why and how. Standard library only: a stage that runs cold pays
nothing for having asked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
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
# ... except these, read only when used, so the fork reads the caller's value (it takes the
# caller's environment). Importing timm sets TORCHINDUCTOR_CACHE_DIR to its default in the
# importing process: a flow or test process that had imported timm would otherwise run every
# stage cold.
READ_WHEN_USED = ("TORCHINDUCTOR_CACHE_DIR",)
IDLE_S = 60.0  # the shared server (plain dvc repro) stops after this long without a stage
IDLE_ENV = "PETS_STAGE_SERVER_IDLE"  # seconds, to change IDLE_S
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # to the fork, as DVC sends them
STARTING_S = 120.0  # a shared server still importing after this long is taken for dead
# a Unix socket's path holds at most 107 bytes; the server binds a name 8 longer first
MAX_SOCKET_PATH = 96
HEADER = struct.Struct("!I")


def identity() -> dict:
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
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(SENSITIVE) and k not in READ_WHEN_USED
        },
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


def recv_line(conn: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


def shared_socket(identity: dict) -> str:
    """The socket of the shared server for callers like this one (plain ``dvc repro``): one per
    user and identity, in a folder only the user can enter."""
    import hashlib

    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"pets-stages-{os.getuid()}"
    if len(str(folder / f"{digest}.sock")) > MAX_SOCKET_PATH:  # a deep TMPDIR: a short one
        folder = Path("/tmp") / f"pets-stages-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder / f"{digest}.sock")


def _start_shared(path: str) -> None:
    """Start the shared server in the background, detached: this stage runs cold meanwhile.

    ``<socket>.starting`` (created exclusively) says one is on its way, so the stages that run
    while it imports start no other; the server removes it when it is up, and one left by a
    server that died starting counts only for :data:`STARTING_S`."""
    marker = f"{path}.starting"
    try:
        if time.time() - os.stat(marker).st_mtime < STARTING_S:
            return
        os.unlink(marker)
    except OSError:
        pass
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:  # another stage just claimed it
        return
    with suppress(OSError):
        subprocess.Popen(
            [sys.executable, "-m", "petsml.stage_server", "--idle", os.environ.get(IDLE_ENV, "")
             or str(IDLE_S), path, *PRELOAD],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=os.path.dirname(path),
        )  # fmt: skip


def hand_off() -> None:
    """Run this ``python -m stages.<name>`` in a server's fork and exit with its status.

    The server is ``$PETS_STAGE_SERVER`` (``pets run``), else the shared one, started here in
    the background when there is none (this stage then runs cold, the next ones warm). Returns
    (and the stage runs here, cold) when switched off (``off``), unreachable, or when the server
    answers that this interpreter differs from its own."""
    setting = os.environ.get(ENV, "")
    stage = _stage_module()
    if setting == "off" or stage is None or not enabled(explicit=False):
        return
    if sys.stdout is None or sys.stderr is None:  # no streams to hand over: run here
        return
    who = identity()
    path = setting or shared_socket(who)
    if not os.path.exists(path):
        if not setting:
            _start_shared(path)
        return
    module, args = stage
    request = {
        "module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ),
        "sys_path": sys.path, "umask": _umask(), "identity": who,
        "stdio": [{"encoding": f.encoding, "errors": f.errors, "line_buffering": f.line_buffering,
                   "write_through": f.write_through} for f in (sys.stdout, sys.stderr)],
    }  # fmt: skip
    # Ctrl-C from the first moment goes to the stage: held until the fork is known, then sent
    child: list[int] = []
    held: list[int] = []

    def forward(signum, _frame) -> None:
        if not child:
            held.append(signum)
            return
        with suppress(ProcessLookupError):
            os.killpg(child[0], signum)  # the stage's group: its own workers too, as in a shell

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        body = json.dumps(request).encode()
        socket.send_fds(conn, [HEADER.pack(len(body))], [0, 1, 2])
        conn.sendall(body)
        answer = recv_line(conn)
    except ConnectionRefusedError:  # a socket left by a server that was killed
        answer = None
        if not setting:
            with suppress(OSError):
                os.unlink(path)
            _start_shared(path)
    except OSError:
        answer = None
    if not answer or "pid" not in answer:  # unreachable, or {"cold": why}: run here
        conn.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in held:
            signal.raise_signal(signum)
        return
    child.append(int(answer["pid"]))
    for signum in held:
        forward(signum, None)
    try:
        done = recv_line(conn)
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


def enabled(explicit: bool = True) -> bool:
    """Whether stages may run as forks here: ``fork`` exists, not macOS, not switched off; for
    :func:`serving` (``explicit``), also no server already set for this process tree."""
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return False
    setting = os.environ.get(ENV, "")
    return setting != "off" and not (explicit and setting)
