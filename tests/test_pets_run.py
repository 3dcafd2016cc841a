"""``pets run`` is ``dvc repro`` in the project's folder, and ``pets sweep`` hands its
arguments to the sweep flow's own command line: both run for real in a fresh copy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from petsml.testing.project import make_project, tool_env

pytestmark = pytest.mark.integration


def _pets(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "petsml.cli", *args], cwd=cwd, env=tool_env(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_pets_run_is_dvc_repro_of_the_project_named_by_params(tmp_path):
    project = make_project(tmp_path / "clone")
    params = str(project / "params.yaml")
    done = _pets(tmp_path, "run", "params", "--dry", "--json", "--params", params)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()  # dvc's own output went to stderr
    answer = json.loads(line)
    assert answer == {"project": str(project), "command": ["dvc", "repro", "--dry", "params"],
                      "exit_code": 0}  # fmt: skip
    assert "Running stage 'params'" in done.stderr  # dvc read this project's dvc.yaml
    assert "'download'" not in done.stderr, "only the stage asked for"
    assert not (project / "data" / "params.ok").exists(), "--dry runs nothing"

    failed = _pets(tmp_path, "run", "nosuchstage", "--params", params)
    assert failed.returncode != 0 and failed.stdout.count("{") == 0
    assert f"ERROR: dvc repro ended with exit status {failed.returncode}" in failed.stderr


def test_pets_sweep_help_is_the_flows_own(tmp_path):
    project = make_project(tmp_path / "clone")
    done = _pets(project, "sweep", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m pipelines.sweep")
    for flag in ("--backbones", "--strategies", "--max-parallel", "--set-param"):
        assert flag in done.stdout, flag
    assert "pets sweep [--params FILE] [--json] ARGS" in done.stdout
