"""Long-running servers started by ``pets``: the port checked first, and every ending signal
ends the whole process tree.

``pets ui`` runs ``mlflow ui``, which starts uvicorn workers, a job runner and huey consumers;
``pets web`` runs uvicorn in-process. A closed terminal (SIGHUP), ``kill`` or a supervisor
(SIGTERM) used to end only ``pets`` itself and leave the server group running under PID 1 with
the port bound. Here each of SIGINT, SIGTERM, SIGHUP and SIGQUIT takes the children down first
(their group and any descendant that left it), then ``pets`` exits 128 + the signal number.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from petsml.errors import PetsError

ENDING_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)  # fmt: skip


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before anything is printed or started.

    A server started on a busy port logs "Address already in use" and exits 0 (``mlflow ui``)
    while the link already printed leads to whatever holds the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # what uvicorn sets too: a port in TIME_WAIT after a stopped server is free to reuse
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PetsError(
                    f"port {port} on {host} is already in use (another server holds it): "
                    f"stop that server or pick a free port with --port, e.g. --port {port + 1}"
                ) from None
            raise PetsError(f"cannot listen on {host}:{port} ({error.strerror}): "
                            "pick another port with --port") from None  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def _signal_all(group: int | None, pids: list[int], sig: int) -> None:
    if group is not None:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(root: int, *, group: int | None = None, grace_s: float = 10.0) -> None:
    """SIGTERM to ``root``'s group and every descendant, SIGKILL to whatever is left after
    ``grace_s``. The descendants are listed before signalling: once their parent dies they
    are re-parented and no longer found under it."""
    pids = [root, *descendants(root)]
    _signal_all(group, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        pids += [p for p in descendants(root) if p not in pids]  # late-started workers
        time.sleep(0.1)
    _signal_all(group, [pid for pid in pids if _alive(pid)], signal.SIGKILL)


def stop_children(grace_s: float = 10.0) -> None:
    """End every process this one started (and theirs), e.g. after an in-process server
    stopped: nothing ``pets`` started outlives it."""
    own = os.getpid()
    pids = descendants(own)
    _signal_all(None, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_all(None, [pid for pid in pids if _alive(pid)], signal.SIGKILL)


def exit_code(sig: int) -> int:
    """The shell's status for a process ended by ``sig``."""
    return 128 + int(sig)


def on_ending_signals(handler: Callable[[int], None]) -> None:
    """``handler(signum)`` on every signal that ends a server command."""
    for sig in ENDING_SIGNALS:
        signal.signal(sig, lambda signum, _frame: handler(signum))


def run_server(command: list[str]) -> int:
    """Run ``command`` in its own process group until it exits or a signal ends ``pets``;
    either way none of its processes outlive this call. Returns the exit status."""
    server = subprocess.Popen(command, start_new_session=True)
    ended: list[int] = []

    def end(signum: int) -> None:
        # no server.wait() here: the main thread is inside it, holding its lock
        for sig in ENDING_SIGNALS:  # a second Ctrl-C does not interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        ended.append(signum)
        stop_tree(server.pid, group=server.pid)

    on_ending_signals(end)
    try:
        code = server.wait()
    finally:
        if server.poll() is None or descendants(server.pid):
            stop_tree(server.pid, group=server.pid)
            server.wait()
    # mlflow ui's workers may outlive a server that exited on its own (e.g. a start error)
    _signal_all(server.pid, [], signal.SIGKILL)
    return exit_code(ended[0]) if ended else code
