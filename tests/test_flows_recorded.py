"""Prefect flows: what a run records as used, isolated workspaces, bad overrides and params.

Everything runs against a temporary Prefect server (``prefect_test_harness``) in throw-away
copies of this repository. Until the later stages run in CI time, the flows target the data
stages (``download -> manifest -> validate -> split``) with the ``targets`` parameter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from petsml.testing.project import (
    REPO,
    dvc,
    make_project,
    run,
    set_params,
)
from pipelines.dvc_graph import experiments
from pipelines.sweep import format_table, member_row, rank_members, sweep
from pipelines.train import (
    train_pipeline,
)
from pipelines.workspace import create_workspace, remove_workspace
from tests.flows import (
    api_filter,
    params_unchanged,
    prefect_client,
)

# a Prefect server and many `dvc repro`s
pytestmark = [pytest.mark.slow(seconds=90), pytest.mark.integration]


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
    return api_filter(
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
    params_unchanged(project)


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
    params_unchanged(project)


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
    with prefect_client() as client:
        name = client.read_flow_run(state.state_details.flow_run_id).name
    members = api_filter("flow_runs", flow_runs={"name": {"like_": name}}, limit=10)
    assert [r["name"] for r in members] == [name], "members started before the check"
    params_unchanged(project)


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
