"""Real servers on loopback for the team-setup tests: `mlflow server`, PostgreSQL, Prefect.

Every server runs in its own process group (``start_new_session``) with SIGINT restored to its
default (an earlier test may leave it ignored, and children inherit that), listens on a port
bound to 0 first, and is taken down group and all on exit, so nothing outlives its test.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def server_env(**extra: str) -> dict[str, str]:
    """This environment without MLFLOW_*/PREFECT_* values earlier in-process tests left, the
    venv first on PATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def start(command: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """``command`` in its own process group, stdout and stderr into ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_default_signals, **kwargs,
        )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group, SIGKILL if it is still there after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 20)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the group may outlive its leader (workers, uvicorn children)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Until ``url`` answers 200; fails with the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"{url}: server exited with {process.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    pytest.fail(f"{url}: no answer after {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


@contextmanager
def mlflow_server(root: Path, backend_uri: str) -> Iterator[str]:
    """``mlflow server`` with ``backend_uri`` and proxied artifacts under ``root/artifacts``:
    the team's tracking server. Yields its ``http://127.0.0.1:<port>`` URI."""
    port = free_port()
    log = root / "mlflow-server.log"
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # no GenAI job runner (huey consumers: seven more processes on a 2-core CI machine)
    env = server_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = start(command, log, cwd=root, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", server, log)
        yield uri
    finally:
        stop(server)


def postgres_bin(name: str) -> str | None:
    """``initdb``/``pg_ctl`` on PATH or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def have_postgres() -> bool:
    """Whether :func:`postgres` can start a cluster here (binaries and the driver)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return False
    return bool(postgres_bin("initdb") and postgres_bin("pg_ctl"))


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth); yields its SQLAlchemy URI.

    Skips, saying why, without ``initdb``/``pg_ctl`` (Debian package ``postgresql``) or
    psycopg2. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user
    in a private temp folder of its own (pytest's tmp folders are closed to other users);
    the folder is removed on exit.
    """
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL (initdb, pg_ctl) not installed: `apt-get install postgresql`")
    try:
        import psycopg2  # noqa: F401 - MLflow's SQLAlchemy driver for postgresql://
    except ImportError:
        pytest.skip("psycopg2 not installed: `pip install psycopg2-binary` (dev extra)")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="pets-pg-"))
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without `runuser`: PostgreSQL cannot start")
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    cluster = data / "cluster"

    def pg(*args: str) -> None:
        result = subprocess.run(
            [*as_user, *args], capture_output=True, text=True, timeout=120,
            preexec_fn=_default_signals,
        )  # fmt: skip
        assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"

    try:
        pg(initdb, "-D", str(cluster), "-U", "pets", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -h 127.0.0.1 -k {data} -c fsync=off"
        pg(pg_ctl, "-D", str(cluster), "-o", options, "-l", str(data / "log"), "-w", "start")
        try:
            yield f"postgresql+psycopg2://pets@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*as_user, pg_ctl, "-D", str(cluster), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, preexec_fn=_default_signals,
            )  # fmt: skip
    finally:
        shutil.rmtree(data, ignore_errors=True)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat_file.parent.name)] = int(fields[1])
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        todo += kids
    return found


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


@contextmanager
def peak_memory_growth(pid: int) -> Iterator[dict[int, int]]:
    """How far each process of ``pid``'s tree rose above its resident memory at the start of
    the block at its peak, in bytes (filled on exit): the kernel's high-water mark (VmHWM) is
    reset first (``/proc/PID/clear_refs``), so an earlier peak cannot hide a new one. Proof of
    what a process did not allocate (a decoded image), whatever the machine's load."""
    pids = process_tree(pid)
    start: dict[int, int] = {}
    for each in pids:
        try:
            Path(f"/proc/{each}/clear_refs").write_text("5")  # 5: reset the peak RSS
            start[each] = _status_kb(each, "VmRSS")
        except (OSError, KeyError) as error:
            pytest.skip(f"cannot reset the peak memory of process {each}: {error}")
    growth: dict[int, int] = {}
    yield growth
    for each, rss in start.items():
        try:
            growth[each] = (_status_kb(each, "VmHWM") - rss) * 1024
        except (OSError, KeyError):
            continue


@contextmanager
def pets_web_in_chromium(
    project: Path, uri: str, log: Path, what: str, start_timeout_s: float = 240
) -> Iterator[tuple]:
    """``pets web`` over the champion of ``uri``, run in ``project`` with this checkout's petsml,
    and a headless Chromium for its page; yields (browser, base URL). Without Chromium the test
    skips, saying why (``what`` names it)."""
    from petsml.testing.browser import browser_paths, chromium
    from petsml.testing.project import REPO

    paths = browser_paths(what)
    port = free_port()
    command = [sys.executable, "-m", "petsml.cli", "web", "--port", str(port),
               "--tracking-uri", uri, "--params", "params.yaml"]  # fmt: skip
    server = start(command, log, cwd=project, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/model", server, log, start_timeout_s)
        with chromium(paths, "1300,1000") as browser:
            yield browser, base
    finally:
        stop(server)
