"""A throw-away copy of this repository where the real DVC pipeline runs on fake data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]  # the checkout these builders copy
SHARED_SAMPLE = REPO.parent / "shared" / "pets-sample"


def tool_env(**extra: str) -> dict[str, str]:
    """Environment whose PATH finds this venv's python, dvc and mlflow first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("GIT_AUTHOR_NAME", "tests")
    env.setdefault("GIT_AUTHOR_EMAIL", "tests@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "tests")
    env.setdefault("GIT_COMMITTER_EMAIL", "tests@example.invalid")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    return [f for f in listed if f and (REPO / f).is_file()]


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the repo's tracked (and not-ignored) files into ``dest``, commit, apply overrides."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if overrides:
        set_params(dest, overrides)
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def set_params(project: Path, overrides: dict) -> None:
    """Apply dotted-key overrides (``{"split.seed": 1}``) to the project's params.yaml."""
    path = project / "params.yaml"
    params = apply_overrides(yaml.safe_load(path.read_text()), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """Set dotted keys (``{"split.seed": 1}``) in a params mapping, in place; returns it."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


def run(
    project: Path,
    *args: str,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args),
        cwd=project,
        env=env or tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-4000:]}"
        )
    return result


def dvc(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(project, "dvc", *args, **kwargs)


def fake_data_params(mirror_url: str, md5: dict[str, str]) -> dict:
    """Overrides that point the pipeline at a fake mirror and relax the per-breed counts."""
    return {
        "data.base_url": mirror_url,
        "data.md5.images": md5["images"],
        "data.md5.annotations": md5["annotations"],
        "data.retries": 3,
        "data.timeout_s": 10,
        "validate.min_images_per_breed": 1,
        "validate.max_images_per_breed": 100,
        "validate.require_all_breeds": False,
        "decode.size": 72,
        "decode.workers": 2,
        # the smallest real offline backbone keeps generated-data pipelines quick; the shipped
        # default (Lite1) loads in tests/test_backbones.py
        "model.backbone": "efficientnet_lite0",
        # compare times each network until its share of this budget is spent (at least one
        # batch each): the tests check the columns, not the figures, so a fraction of a second
        "compare.latency_budget_s": 0.3,
    }


def commit_without_running(project: Path) -> None:
    """Give every stage a placeholder output and record the pipeline in dvc.lock, without
    running anything: `dvc status` then compares code and params against that lock."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        outs = [
            Path(os.path.relpath(o.fs_path, repo.root_dir))
            for s in repo.index.stages
            for o in s.outs
        ]
        deps = {
            Path(os.path.relpath(d.fs_path, repo.root_dir))
            for s in repo.index.stages
            for d in s.deps
            if not hasattr(d, "params")
        }
    for out in outs:
        if (project / out).exists():  # a stage that did run keeps its real output
            continue
        inside = [d for d in deps if out in d.parents]  # files other stages read in it
        targets = inside or [project / out if out.suffix else out / "placeholder.txt"]
        for target in targets:
            target = project / target
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"{out}\n")
    dvc(project, "commit", "--force", "--quiet")
    assert changed_stages(project) == set(), "freshly committed pipeline is not up to date"


def changed_stages(project: Path, env: dict[str, str] | None = None) -> set[str]:
    """Stages `dvc status` reports, less those marked always_changed (they look every time)."""
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    always = {name for name, stage in declared.items() if stage.get("always_changed")}
    status = json.loads(dvc(project, "status", "--json", env=env).stdout or "{}")
    return {name.rpartition(":")[2] for name in status} - always


E2E_STRATEGIES = ["feature_extractor", "svm_early", "scratch"]


def pass_log(project: Path) -> Path:
    """Where :func:`run_whole_pipeline` records every network pass over the photos."""
    return project.parent / "passes.jsonl"


def params_log(project: Path) -> Path:
    """Where :func:`run_whole_pipeline` records the params each stage process read."""
    return project.parent / "params_reads.jsonl"


def run_whole_pipeline(root: Path) -> tuple[Path, str, subprocess.CompletedProcess, ...]:
    """The whole pipeline under `dvc repro` on generated photos from a loopback mirror, then a
    second `dvc repro` (nothing changed), tracked into the project's default store
    (``mlruns/mlflow.db``). Returns (project, tracking URI, first repro, second repro).

    Built once per session (the ``pipeline_run`` fixture): test_pipeline_e2e reads it,
    test_store_recovery_e2e works on a copy (the project can be copied with its ``mlruns/``)."""
    from petsml.testing.fakedata import MirrorServer, make_dataset, pack_archives

    make_dataset(root / "src", per_breed=12, test_per_breed=4)
    md5 = pack_archives(root / "src", root / "mirror")
    overrides = fake_data_params("", md5) | {
        "model.image_size": 64,
        "train.strategies": E2E_STRATEGIES,
        "train.epochs": 2,
        "train.batch_size": 16,
        "features.batch_size": 32,
    }
    env = tool_env(  # who ran which network, how often; which params each stage read
        PETS_PASS_LOG=str(pass_log(root / "p")), PETS_PARAMS_LOG=str(params_log(root / "p"))
    )
    env.pop("MLFLOW_TRACKING_URI", None)  # the project default: sqlite:///mlruns/mlflow.db
    # every stage a cold process, without a stage server (petsml.stage_server): the rest of
    # the suite runs its pipelines under one
    env["PETS_STAGE_SERVER"] = "off"
    with MirrorServer(root / "mirror") as server:
        overrides["data.base_url"] = server.url
        project = make_project(root / "p", overrides)
        first = dvc(project, "repro", env=env, timeout=900)
        second = dvc(project, "repro", env=env, timeout=300)
    return project, f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", first, second


def shipped_params(overrides: dict | None = None, **dotted: object):
    """The project's params.yaml (the one home of every value) with dotted-key overrides
    (``shipped_params({"train.epochs": 1})`` or ``shipped_params(**{"train.epochs": 1})``),
    parsed and checked like a stage loads it."""
    from petsml.config import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    return parse_params(apply_overrides(raw, {**(overrides or {}), **dotted}))


def shipped_section(name: str, **overrides: object):
    """One section of the shipped params.yaml with some of its keys overridden."""
    params = shipped_params({f"{name}.{key}": value for key, value in overrides.items()})
    return getattr(params, "validate_" if name == "validate" else name)
