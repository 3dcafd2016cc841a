"""Helpers of the Prefect flow tests (test_flows.py, test_flows_recorded.py): the API of the
temporary Prefect server, and what a run must leave behind."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from petsml.testing.project import run
from pipelines.workspace import WORKSPACES


def prefect_client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def api_filter(path: str, **body) -> list[dict]:
    """POST ``/<path>/filter`` without the null fields the client helpers send (this pinned
    server answers 422 to null ``limit``/``sort``, and an empty task-run filter hides
    flow-level artifacts)."""
    with prefect_client() as client:
        response = client._client.post(f"/{path}/filter", json={"offset": 0, **body})
    response.raise_for_status()
    return response.json()


def find_artifact(flow_run_id: str, key: str) -> dict:
    found = api_filter(
        "artifacts",
        artifacts={"key": {"any_": [key]}},
        flow_runs={"id": {"any_": [flow_run_id]}},
        sort="CREATED_DESC",
        limit=10,
    )
    assert len(found) == 1, found
    return found[0]


def gone(pid: int, wait_s: float = 15) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat")
            if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (ProcessLookupError, OSError):
            return True
        time.sleep(0.2)
    return False


def params_unchanged(project: Path) -> None:
    assert (
        run(project, "git", "diff", "--exit-code", "--", "params.yaml", check=False).returncode == 0
    )
    assert run(project, "git", "worktree", "list", "--porcelain").stdout.count("worktree ") == 1
    assert not any((project / WORKSPACES).glob("*")), "isolated workspace left behind"


def cache_is_intact(project: Path) -> int:
    """Every object in the DVC cache hashes to its own name; returns how many there are."""
    objects = [p for p in (project / ".dvc/cache/files/md5").glob("*/*") if p.is_file()]
    for obj in objects:
        digest = hashlib.md5(obj.read_bytes()).hexdigest()
        assert digest == obj.parent.name + obj.name.removesuffix(".dir"), f"corrupt {obj}"
    return len(objects)
