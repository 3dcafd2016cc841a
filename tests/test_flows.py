"""Prefect flows over the real DVC pipeline, on fake archives from a loopback mirror.

Everything runs against a temporary Prefect server (``prefect_test_harness``) in throw-away
copies of this repository. Until the later stages run in CI time, the flows target the data
stages (``download -> manifest -> validate -> split``) with the ``targets`` parameter.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
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
from pipelines.sweep import format_table, member_row, rank_members, sweep
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

DATA_STAGES = ["params", "download", "manifest", "validate", "split"]
# a Prefect server and many `dvc repro`s
pytestmark = [pytest.mark.slow(seconds=230), pytest.mark.integration]


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


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _api_filter(path: str, **body) -> list[dict]:
    """POST ``/<path>/filter`` without the null fields the client helpers send (this pinned
    server answers 422 to null ``limit``/``sort``, and an empty task-run filter hides
    flow-level artifacts)."""
    with _client() as client:
        response = client._client.post(f"/{path}/filter", json={"offset": 0, **body})
    response.raise_for_status()
    return response.json()


def _artifact(flow_run_id: str, key: str) -> dict:
    found = _api_filter(
        "artifacts",
        artifacts={"key": {"any_": [key]}},
        flow_runs={"id": {"any_": [flow_run_id]}},
        sort="CREATED_DESC",
        limit=10,
    )
    assert len(found) == 1, found
    return found[0]


def _gone(pid: int, wait_s: float = 15) -> bool:
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


def _params_unchanged(project: Path) -> None:
    assert (
        run(project, "git", "diff", "--exit-code", "--", "params.yaml", check=False).returncode == 0
    )
    assert run(project, "git", "worktree", "list", "--porcelain").stdout.count("worktree ") == 1
    assert not any((project / WORKSPACES).glob("*")), "isolated workspace left behind"


def _cache_is_intact(project: Path) -> int:
    """Every object in the DVC cache hashes to its own name; returns how many there are."""
    objects = [p for p in (project / ".dvc/cache/files/md5").glob("*/*") if p.is_file()]
    for obj in objects:
        digest = hashlib.md5(obj.read_bytes()).hexdigest()
        assert digest == obj.parent.name + obj.name.removesuffix(".dir"), f"corrupt {obj}"
    return len(objects)


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
    assert _gone(int((project / "nap.pid").read_text())), "the stage's process survived"


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
    artifact = _artifact(second["flow_run"]["id"], "pets-train-run")
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
    _params_unchanged(project)

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
        _client().read_flow_run(state.state_details.flow_run_id).state.message,
    ):
        assert "DVC stage 'download' failed" in message
        assert "ERROR [download]" in message and "md5" in message.lower()
    _params_unchanged(project)


# --------------------------------------------------------------------------- deployment


def _read_deployment(name: str):
    with _client() as client:
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
    runs = _api_filter(
        "flow_runs", flow_runs={"name": {"any_": [flow_run_name]}}, sort="ID_DESC", limit=10
    )
    assert len(runs) == 1, runs
    tasks = _api_filter(
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

        table = _artifact(str(state.state_details.flow_run_id), "pets-sweep-comparison")
        assert {row["member"] for row in json.loads(table["data"])} == {r["member"] for r in rows}

        assert _cache_is_intact(project) > 0
        recorded = experiments(project)
        backbones = {
            recorded[row["experiment"]]["params"]["params.yaml"]["model"]["backbone"]
            for row in rows
        }
        assert backbones == {"efficientnet_lite0", "efficientnet_lite1"}
        _params_unchanged(project)

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


# --------------------------------------------------------------------------- what is recorded

TINY_STAGE = '''"""A tiny stage: copies <stage>.txt to <stage>.out. The first run of "second"
also plays the person who edits files while a long stage runs (once: edited.flag says so)."""
import sys
from pathlib import Path

import yaml

stage = sys.argv[1]
text = Path(f"{stage}.txt").read_text()
if stage == "second" and not Path("edited.flag").exists():
    Path("edited.flag").write_text("")
    Path("first.txt").write_text("first, edited after its stage had run\\n")
    Path("second.txt").write_text("second, edited while its stage ran\\n")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["split"]["seed"] += 1
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
Path(f"{stage}.out").write_text(text)
'''


def _with_tiny_stages(project: Path) -> Path:
    """Add two second-long stages (no data) to the project's pipeline and commit them."""
    (project / "tiny.py").write_text(TINY_STAGE)
    for stage in ("first", "second"):
        (project / f"{stage}.txt").write_text(f"{stage}\n")
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    pipeline["stages"]["first"] = {
        "cmd": "python tiny.py first",
        "deps": ["tiny.py", "first.txt"],
        "params": ["split.seed"],
        "outs": ["first.out"],
    }
    pipeline["stages"]["second"] = {
        "cmd": "python tiny.py second",
        "deps": ["tiny.py", "second.txt", "first.out"],
        "outs": ["second.out"],
    }
    pipeline["stages"]["show"] = {
        "cmd": "python -c \"import yaml; p = yaml.safe_load(open('params.yaml')); "
        "open('shown.txt', 'w').write(str(p['split']['seed']))\"",
        "params": ["split.seed"],
        "outs": [{"shown.txt": {"cache": False}}],
    }
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "tiny stages")
    return project


def _task_runs(flow_run_id: str) -> list[dict]:
    return _api_filter(
        "task_runs", flow_runs={"id": {"any_": [flow_run_id]}}, sort="ID_DESC", limit=200
    )


def test_inputs_edited_while_the_run_went_on_are_not_recorded_as_used(prefect_server, tmp_path):
    project = _with_tiny_stages(make_project(tmp_path / "p"))
    state = train_pipeline(project_dir=str(project), targets=["second"], return_state=True)
    assert state.is_failed(), state
    for what in (
        "first.txt (stage first)",  # edited after its stage ran: dvc.lock has the old hash
        "params.yaml:split.seed (stage first)",
        "second.txt (stage second)",  # edited while its stage ran: dvc.lock has the new one
    ):
        assert what in state.message, state.message
    assert "Re-run the flow" in state.message
    assert "tiny.py" not in state.message
    assert experiments(project) == {}, "an experiment recorded inputs the stages never ran with"

    # Re-run once the edits are done: DVC re-runs what they affect, and the run is recorded.
    again = train_pipeline(project_dir=str(project), targets=["second"])
    assert [row["status"] for row in again["stages"]] == ["ran", "ran"]
    assert (project / "second.out").read_text() == "second, edited while its stage ran\n"
    assert (project / "first.out").read_text() == "first, edited after its stage had run\n"
    exp = again["experiment"]
    assert experiments(project)[exp["name"]]["params"]["params.yaml"]["split"]["seed"] == 43
    assert dvc(project, "status", "second").stdout.strip().endswith("up to date.")


def test_isolated_workspace_carries_staged_changes(tmp_path):
    project = make_project(tmp_path / "p")
    (project / "README.md").write_text("edited and staged\n")
    (project / "staged-new.txt").write_text("new and staged\n")
    (project / "params.yaml").write_text("# staged version\n")
    run(project, "git", "add", "README.md", "staged-new.txt", "params.yaml")
    (project / "params.yaml").write_text("# staged, then edited again\n")
    run(project, "git", "rm", "-q", "Makefile")
    run(project, "git", "mv", "docs/ARCHITECTURE.md", "docs/DESIGN.md")
    workspace = create_workspace(project, "staged")
    try:
        assert (workspace / "README.md").read_text() == "edited and staged\n"
        assert (workspace / "staged-new.txt").read_text() == "new and staged\n"
        assert (workspace / "params.yaml").read_text() == "# staged, then edited again\n"
        assert not (workspace / "Makefile").exists()
        assert not (workspace / "docs/ARCHITECTURE.md").exists()
        assert (workspace / "docs/DESIGN.md").read_bytes() == (
            project / "docs/DESIGN.md"
        ).read_bytes()
    finally:
        remove_workspace(project, workspace)


def test_an_override_run_uses_a_staged_params_edit(prefect_server, tmp_path):
    project = _with_tiny_stages(make_project(tmp_path / "p"))
    set_params(project, {"split.seed": 11})
    run(project, "git", "add", "params.yaml")
    result = train_pipeline(project_dir=str(project), targets=["show"], seed=5)
    assert result["isolated"] and [row["stage"] for row in result["stages"]] == ["show"]
    exp = result["experiment"]
    assert run(project, "git", "show", f"{exp['rev']}:shown.txt").stdout == "11"
    params = experiments(project)[exp["name"]]["params"]["params.yaml"]
    assert params["split"]["seed"] == 11 and params["train"]["seed"] == 5
    assert run(project, "git", "diff", "--cached", "--name-only").stdout.split() == ["params.yaml"]


def test_a_bad_params_key_fails_the_run_before_any_stage(prefect_server, tmp_path):
    project = _with_tiny_stages(make_project(tmp_path / "p"))
    set_params(project, {"train.epochs": 0, "train.epochz": 3})
    state = train_pipeline(project_dir=str(project), targets=["show"], return_state=True)
    assert state.is_failed()
    assert "train.epochs" in state.message and "train.epochz" in state.message, state.message
    assert _task_runs(str(state.state_details.flow_run_id)) == [], "a stage ran anyway"
    assert not (project / "shown.txt").exists()

    run(project, "git", "checkout", "params.yaml")
    state = train_pipeline(
        project_dir=str(project), targets=["show"], set_params=["train.patience=0"],
        return_state=True,
    )  # fmt: skip
    assert state.is_failed() and "train.patience" in state.message, state.message
    assert _task_runs(str(state.state_details.flow_run_id)) == []
    _params_unchanged(project)


def test_a_bad_override_is_named_as_typed_without_a_traceback_or_telemetry_errors(tmp_path):
    """`python -m pipelines.train -S model.backbone=efficientnet_lite9`, as a user runs it (its
    own temporary Prefect server, an environment without PREFECT_* settings): one message that
    names the override typed, not the run's temporary params copy, and no Prefect traceback or
    "Failed to send telemetry" line."""
    from tests.servers import server_env

    project = _with_tiny_stages(make_project(tmp_path / "p"))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "-S", "model.backbone=efficientnet_lite9",
         "--targets", "show"],
        cwd=project, env=server_env(PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    err = result.stderr
    assert result.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "telemetry" not in err.lower(), err[-3000:]
    message = err.split("pets-train Failed:", 1)[-1]  # what the command prints last
    assert "Fix the override 'model.backbone=efficientnet_lite9'" in message, err[-3000:]
    assert ".dvc/tmp/flows" not in message, message  # a copy the run deletes
    assert "Fix model.backbone in" not in message, message
    assert not (project / "shown.txt").exists()
    _params_unchanged(project)


def test_a_bad_override_fails_the_sweep_before_any_member_runs(prefect_server, tmp_path):
    project = _with_tiny_stages(make_project(tmp_path / "p"))
    state = sweep(
        project_dir=str(project),
        targets=["show"],
        backbones=["bb_one", "bb_two"],
        strategies=["feature_extractor"],
        set_params=["train.patience=0"],
        return_state=True,
    )
    assert state.is_failed()
    assert "train.patience" in state.message and "bb_one" in state.message, state.message
    with _client() as client:
        name = client.read_flow_run(state.state_details.flow_run_id).name
    members = _api_filter("flow_runs", flow_runs={"name": {"like_": name}}, limit=10)
    assert [r["name"] for r in members] == [name], "members started before the check"
    _params_unchanged(project)


def test_sweep_ranks_members_by_validation_accuracy_not_test(tmp_path):
    def row(member: str, val: float | None, test: float) -> dict:
        metrics = {"feature_extractor": {"test_accuracy": test, "val_accuracy": val}}
        return member_row(member, "bb", "feature_extractor", None, {"metrics": metrics}, 1.0)

    rows = [row("a", 0.70, 0.95), row("b", 0.90, 0.60), row("c", None, 0.99), row("d", 0.80, 0.1)]
    ranked = rank_members(rows)
    assert [r["member"] for r in ranked] == ["b", "d", "a", "c"]
    table = format_table(ranked).splitlines()
    assert table[0].index("val_accuracy") < table[0].index("test_accuracy")
    assert [line.split()[0] for line in table[1:]] == ["b", "d", "a", "c"]
