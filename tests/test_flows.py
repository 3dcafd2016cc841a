"""Prefect flows over the real DVC pipeline, on fake archives from a loopback mirror.

Everything runs against a temporary Prefect server (``prefect_test_harness``) in throw-away
copies of this repository. Until the later stages run in CI time, the flows target the data
stages (``download -> manifest -> validate -> split``) with the ``targets`` parameter.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from petsml.testing.fakedata import MirrorServer
from petsml.testing.project import (
    REPO,
    dvc,
    fake_data_params,
    make_project,
    run,
    set_params,
    tool_env,
)
from pipelines.dvc_graph import experiments, stage_order
from pipelines.sweep import build_parser as build_sweep_parser
from pipelines.sweep import sweep
from pipelines.train import (
    DEPLOYMENT_NAME,
    FLOW_NAME,
    SERVE_ONLY,
    WEEKLY_CRON,
    build_parser,
    main,
    train_pipeline,
)
from pipelines.workspace import WORKSPACES, create_workspace, remove_workspace
from tests.flows import (
    api_filter,
    cache_is_intact,
    find_artifact,
    gone,
    params_unchanged,
    prefect_client,
)

DATA_STAGES = ["params", "download", "manifest", "validate", "split"]
# a Prefect server and many `dvc repro`s
pytestmark = [pytest.mark.slow(seconds=150), pytest.mark.integration]


@pytest.fixture(scope="module")
def archives(fake_archives):
    """The shared generated archives (tests/conftest.py): (folder, md5)."""
    return fake_archives.folder, fake_archives.md5


@pytest.fixture(scope="module")
def mirror(loopback_mirror):
    return loopback_mirror


@pytest.fixture(scope="module")
def project(tmp_path_factory, archives, mirror):
    """One project copy for the tests that only add to it (runs, experiments)."""
    _, md5 = archives
    return make_project(tmp_path_factory.mktemp("flows") / "p", fake_data_params(mirror.url, md5))


# --------------------------------------------------------------------------- the DVC graph


def test_stage_order_is_dvcs_own_and_a_stage_past_its_timeout_is_killed(prefect_server, tmp_path):
    project = make_project(tmp_path / "p")
    order = stage_order(project)
    assert order[: len(DATA_STAGES)] == DATA_STAGES
    strategies = yaml.safe_load((project / "params.yaml").read_text())["train"]["strategies"]
    for strategy in strategies:  # foreach expands from params.yaml
        assert order.index(f"train@{strategy}") < order.index("evaluate")
    assert stage_order(project, ["split"]) == DATA_STAGES
    assert stage_order(project, [f"train@{strategies[0]}"])[-1] == f"train@{strategies[0]}"

    # Edit dvc.yaml and params.yaml: the plan follows, nothing to update by hand.
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    pipeline["stages"]["audit"] = {"cmd": "echo audit", "deps": ["data/splits"]}
    pipeline["stages"]["nap"] = {
        "cmd": "python -c \"import os, time; open('nap.pid', 'w').write(str(os.getpid())); "
        'time.sleep(120)"'
    }
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    set_params(project, {"train.strategies": ["finetune_top"]})
    changed = stage_order(project)
    assert "train@finetune_top" in changed
    assert not {f"train@{s}" for s in strategies} & set(changed)
    assert stage_order(project, ["audit"]) == [*DATA_STAGES, "audit"]

    state = train_pipeline(
        project_dir=str(project), targets=["nap"], stage_timeout_s=3, save_exp=False,
        return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    assert "'nap'" in state.message and "timed out" in state.message
    assert gone(int((project / "nap.pid").read_text())), "the stage's process survived"


def test_isolated_workspace_carries_uncommitted_work_over_the_shared_cache(tmp_path):
    project = make_project(tmp_path / "p")
    (project / "README.md").write_text("edited, not committed\n")
    (project / "notes.txt").write_text("untracked\n")
    (project / "Makefile").unlink()
    workspace = create_workspace(project, "carry")
    try:
        assert workspace.is_relative_to(project / WORKSPACES)
        assert (workspace / "README.md").read_text() == "edited, not committed\n"
        assert (workspace / "notes.txt").read_text() == "untracked\n"
        assert not (workspace / "Makefile").exists()
        cache = dvc(workspace, "cache", "dir").stdout.strip()
        assert Path(cache).resolve() == (project / ".dvc/cache").resolve()
        assert run(project, "git", "status", "--porcelain").stdout.count("\n") == 3
    finally:
        remove_workspace(project, workspace)
    assert not workspace.exists()
    assert run(project, "git", "worktree", "list", "--porcelain").stdout.count("worktree ") == 1


# --------------------------------------------------------------------------- train flow


def test_flow_runs_the_stages_then_dvc_skips_them(prefect_server, project):
    (project / "notes.txt").write_text("a user's untracked file stays out of experiments\n")
    first = train_pipeline(project_dir=str(project), targets=["split"], retry_delay_s=0)
    assert [row["stage"] for row in first["stages"]] == DATA_STAGES
    assert [row["status"] for row in first["stages"]] == ["ran"] * len(DATA_STAGES)
    assert (project / "data/splits/train.csv").exists()
    assert not first["isolated"] and first["workspace"] == str(project)

    second = train_pipeline(project_dir=str(project), targets=["split"], retry_delay_s=0)
    assert [row["status"] for row in second["stages"]] == ["skipped"] * len(DATA_STAGES)
    assert dvc(project, "status", "--with-deps", "split").stdout.strip().endswith("up to date.")

    recorded = experiments(project)
    for result in (first, second):
        exp = result["experiment"]
        assert recorded[exp["name"]]["rev"] == exp["rev"]
        committed = run(project, "git", "ls-tree", "-r", "--name-only", exp["rev"]).stdout
        assert {"dvc.lock", "reports/.gitignore"} <= set(committed.split())
        assert "notes.txt" not in committed.split()
    assert "?? notes.txt" in run(project, "git", "status", "--porcelain").stdout
    artifact = find_artifact(second["flow_run"]["id"], "pets-train-run")
    assert second["experiment"]["name"] in artifact["data"]
    assert "| split | skipped |" in artifact["data"]


def test_overrides_run_as_an_experiment_and_leave_params_yaml_alone(prefect_server, project):
    before = (project / "params.yaml").read_bytes()
    result = train_pipeline(
        project_dir=str(project),
        targets=["split"],
        seed=5,
        set_params=["split.seed=7"],
        retry_delay_s=0,
    )
    assert result["isolated"] and result["overrides"] == ["train.seed=5", "split.seed=7"]
    assert [row["stage"] for row in result["stages"]] == DATA_STAGES
    assert (project / "params.yaml").read_bytes() == before
    params_unchanged(project)

    exp = result["experiment"]
    params = experiments(project)[exp["name"]]["params"]["params.yaml"]
    assert params["split"]["seed"] == 7 and params["train"]["seed"] == 5
    diff = json.loads(dvc(project, "params", "diff", exp["baseline"], exp["rev"], "--json").stdout)
    assert diff["params.yaml"]["split.seed"] | {"diff": None} == {"old": 42, "new": 7, "diff": None}
    assert diff["params.yaml"]["train.seed"]["new"] == 5
    committed = run(project, "git", "ls-tree", "-r", "--name-only", exp["rev"]).stdout.split()
    assert {"dvc.lock", "params.yaml", "reports/.gitignore"} <= set(committed)


def test_flaky_mirror_is_survived_by_the_download_task_retries(prefect_server, archives, tmp_path):
    folder, md5 = archives
    # The downloader gives up after 2 attempts (data.retries=1); the mirror fails 2 requests.
    with MirrorServer(folder, fail_first=2) as flaky:
        params = fake_data_params(flaky.url, md5) | {"data.retries": 1}
        project = make_project(tmp_path / "p", params)
        result = train_pipeline(
            project_dir=str(project), targets=["download"], retries=3, retry_delay_s=0.1
        )
        failed = [path for path, _ in flaky.requests[:2]]
    assert failed == ["/images.tar.gz", "/images.tar.gz"]
    assert [row["stage"] for row in result["stages"]] == ["params", "download"]
    assert result["stages"][-1] == {
        **result["stages"][-1],
        "stage": "download",
        "status": "ran",
        "attempts": 2,
    }
    assert (project / "data/raw/images").is_dir()


def test_a_failing_stage_fails_the_flow_with_its_own_error(prefect_server, project):
    state = train_pipeline(
        project_dir=str(project),
        targets=["split"],
        set_params=[f"data.md5.images='{'0' * 32}'"],
        retries=1,
        retry_delay_s=0,
        return_state=True,
    )
    assert state.is_failed()
    for message in (
        state.message,
        prefect_client().read_flow_run(state.state_details.flow_run_id).state.message,
    ):
        assert "DVC stage 'download' failed" in message
        assert "ERROR [download]" in message and "md5" in message.lower()
    params_unchanged(project)


# --------------------------------------------------------------------------- deployment


def _read_deployment(name: str):
    with prefect_client() as client:
        return client.read_deployment_by_name(name)


def test_serve_deployment_registers_the_weekly_schedule(prefect_server):
    """What ``python -m pipelines.train --serve`` registers before it starts polling."""
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    weekly = next(d for d in config["deployments"] if d["name"] == DEPLOYMENT_NAME)
    assert [s["cron"] for s in weekly["schedules"]] == [WEEKLY_CRON]
    entry = load_flow_from_entrypoint(str(REPO / weekly["entrypoint"]))
    assert entry.name == FLOW_NAME

    deployment = train_pipeline.to_deployment(
        name=DEPLOYMENT_NAME, cron=WEEKLY_CRON, parameters={"targets": ["split"]}
    )
    deployment.apply()
    stored = _read_deployment(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
    assert [s.schedule.cron for s in stored.schedules] == [WEEKLY_CRON]
    assert stored.schedules[0].active and stored.parameters == {"targets": ["split"]}
    assert set(inspect.signature(train_pipeline.fn).parameters) == set(
        stored.parameter_openapi_schema["properties"]
    )


# `prefect deploy --all` of prefect.yaml: tests/test_work_pool.py (its real server has it).


def test_command_line_mirrors_the_flow_and_serves_the_schedule(monkeypatch):
    dests = {a.dest for a in build_parser()._actions} - {"help"} - SERVE_ONLY
    assert dests == set(inspect.signature(train_pipeline.fn).parameters)
    sweep_dests = {a.dest for a in build_sweep_parser()._actions} - {"help"}
    assert sweep_dests == set(inspect.signature(sweep.fn).parameters)
    served = {}
    monkeypatch.setattr(type(train_pipeline), "serve", lambda self, **kw: served.update(kw))
    assert main(["--serve", "--targets", "split", "--epochs", "2"]) == 0
    assert served["name"] == DEPLOYMENT_NAME and served["cron"] == WEEKLY_CRON
    assert served["parameters"]["targets"] == ["split"] and served["parameters"]["epochs"] == 2
    shown = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "--help"],
        cwd=REPO,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0
    for option in ("--targets", "--backbone", "--strategies", "--set-param", "--serve"):
        assert option in shown.stdout


# --------------------------------------------------------------------------- sweep


def _task_windows(flow_run_name: str) -> list[tuple[datetime, datetime]]:
    """When each data-stage task of the named flow run started and ended."""
    runs = api_filter(
        "flow_runs", flow_runs={"name": {"any_": [flow_run_name]}}, sort="ID_DESC", limit=10
    )
    assert len(runs) == 1, runs
    tasks = api_filter(
        "task_runs", flow_runs={"id": {"any_": [runs[0]["id"]]}}, sort="ID_DESC", limit=200
    )
    return [
        (datetime.fromisoformat(t["start_time"]), datetime.fromisoformat(t["end_time"]))
        for t in tasks
        if t["name"] in DATA_STAGES and t["start_time"] and t["end_time"]
    ]


def test_sweep_members_run_side_by_side_over_one_cache(prefect_server, archives, tmp_path):
    folder, md5 = archives
    with MirrorServer(folder) as server:
        project = make_project(tmp_path / "p", fake_data_params(server.url, md5))
        state = sweep(
            project_dir=str(project),
            targets=["split"],
            backbones=["efficientnet_lite0", "efficientnet_lite1"],  # params check resolves them
            strategies=["feature_extractor"],
            max_parallel=2,
            retry_delay_s=0,
            return_state=True,
        )
        rows = state.result()
        assert [row["state"] for row in rows] == ["Completed", "Completed"]
        one, two = (_task_windows(row["member"]) for row in rows)
        assert len(one) == len(two) == len(DATA_STAGES)
        assert any(a0 < b1 and b0 < a1 for a0, a1 in one for b0, b1 in two), "not concurrent"

        table = find_artifact(str(state.state_details.flow_run_id), "pets-sweep-comparison")
        assert {row["member"] for row in json.loads(table["data"])} == {r["member"] for r in rows}

        assert cache_is_intact(project) > 0
        recorded = experiments(project)
        backbones = {
            recorded[row["experiment"]]["params"]["params.yaml"]["model"]["backbone"]
            for row in rows
        }
        assert backbones == {"efficientnet_lite0", "efficientnet_lite1"}
        params_unchanged(project)

        # The project itself now restores every data stage from the shared (run) cache.
        requests = len(server.requests)
        again = dvc(project, "repro", "split").stdout
        # Only the params check runs (the members checked their own params.yaml, not this one).
        ran = [line for line in again.splitlines() if line.startswith("Running stage")]
        assert ran == ["Running stage 'params':"]
        assert again.count("is cached") == len(DATA_STAGES) - 1
        assert len(server.requests) == requests
        status = dvc(project, "status", "--with-deps", "split").stdout
        assert status.strip().endswith("up to date.")
