"""dvc.yaml's code deps are exactly the project modules each stage runs, and stay so.

``tools/stage_deps.py`` (``make deps``) writes them from the code: the static closure of each
stage's ``python -m stages.X`` module over every ``import`` statement, module-level or inside
a function (lazy imports are how `train` picks its strategy's code). Here: the committed file is
what the generator writes, a sys.modules check in a real interpreter keeps that walk honest, and
real DVC shows the consequence: edit a module, and `dvc status` flags exactly the stages that
run it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from petsml.testing.project import (
    REPO,
    changed_stages,
    commit_without_running,
    make_project,
    run,
    tool_env,
)
from tools.stage_deps import CODE_ROOTS, closure, generate

pytestmark = [pytest.mark.slow(seconds=30), pytest.mark.integration]


# --------------------------------------------------------------------------- DVC's view


@cache
def stages() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Stage name -> (stage module, dep paths) as DVC itself expands dvc.yaml (foreach too)."""
    from dvc.repo import Repo

    out = {}
    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            match = re.search(r"python -m (stages\.\w+)", stage.cmd or "")
            assert match, f"stage {stage.addressing}: cmd {stage.cmd!r} runs no stages.X module"
            deps = tuple(
                Path(os.path.relpath(d.fs_path, repo.root_dir)).as_posix() for d in stage.deps
            )
            out[stage.addressing] = (match.group(1), deps)
    return out


def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def code_deps(deps: tuple[str, ...]) -> list[str]:
    return [d for d in deps if d.split("/")[0] in CODE_ROOTS]


def stages_running(path: str) -> set[str]:
    return {name for name, (module, _) in stages().items() if path in closure(module)}


# --------------------------------------------------------------------------- tests


def test_committed_code_deps_are_what_the_generator_writes():
    text = (REPO / "dvc.yaml").read_text()
    assert generate(text) == text, "dvc.yaml's code deps are stale: run `make deps`"
    # and the generator is no identity: a stage's list drops a module it imports, or gains one
    stale = text.replace("      - petsml/data/split.py\n", "", 1)
    assert stale != text and generate(stale) == text
    extra = text.replace("      - stages/check_params.py\n",
                         "      - stages/check_params.py\n      - petsml/cli.py\n", 1)  # fmt: skip
    assert generate(extra) == text


def test_data_stages_never_depend_on_tensor_or_fine_tuning_code():
    # The over-broad edits the pipeline is careful about, named: a download never re-runs for
    # model code, the data stages never for training code.
    for name in ("params", "download", "manifest", "validate", "split", "decode"):
        _, deps = stages()[name]
        assert not any(
            covers(d, "petsml/training/finetune.py") or covers(d, "petsml/data/tensors.py")
            for d in deps
        ), name
    _, featurize = stages()["featurize"]
    assert not any(covers(d, "petsml/training/finetune.py") for d in featurize)
    _, evaluate = stages()["evaluate"]
    assert not any(d.startswith("petsml/training") for d in evaluate)


def test_the_import_walk_sees_every_module_python_loads_for_each_stage():
    """Import each stage module in one fresh interpreter, forgetting the project's modules
    between stages, and compare what landed in sys.modules with the static walk."""
    modules = sorted({module for module, _ in stages().values()})
    script = (
        "import json, sys\n"
        "out = {}\n"
        f"for entry in {modules!r}:\n"
        "    for name in [n for n in sys.modules if n.split('.')[0] in ('petsml', 'stages')]:\n"
        "        del sys.modules[name]\n"
        "    __import__(entry)\n"
        "    out[entry] = sorted(\n"
        "        m.__file__ for n, m in sys.modules.items()\n"
        "        if n.split('.')[0] in ('petsml', 'stages') and getattr(m, '__file__', None))\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=tool_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    for entry, files in loaded.items():
        relative = {Path(f).resolve().relative_to(REPO).as_posix() for f in files}
        assert relative, entry
        assert relative <= closure(entry), (entry, sorted(relative - closure(entry)))


# --------------------------------------------------------------------------- real DVC


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("deps") / "p")
    commit_without_running(project)
    return project


@pytest.mark.parametrize(
    "module",
    ["petsml/data/tensors.py", "petsml/data/breeds.py", "petsml/training/finetune.py"],
)
def test_editing_a_module_marks_exactly_the_stages_that_run_it(committed, module):
    path = committed / module
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        changed = changed_stages(committed)
    finally:
        path.write_text(original)
    assert changed == stages_running(module), module
    if module == "petsml/data/tensors.py":  # augment / to_input feed features, models, metrics
        assert {"featurize", "train@feature_extractor", "train@svm_early", "evaluate"} <= changed
        assert not {"download", "manifest", "validate", "split", "decode"} & changed
    if module == "petsml/data/breeds.py":
        assert {"manifest", "validate", "split"} <= changed
    assert changed_stages(committed) == set()


def test_importing_the_code_leaves_code_folder_deps_unchanged(tmp_path):
    project = make_project(tmp_path / "p")
    commit_without_running(project)
    folders = {str(Path(d).parent) for _, deps in stages().values() for d in code_deps(deps)}

    env = tool_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # write __pycache__/ as a user's python does
    modules = sorted({module for module, _ in stages().values()})
    run(project, sys.executable, "-c", "; ".join(f"import {m}" for m in modules), env=env)
    assert any(any((project / f).rglob("__pycache__")) for f in folders)
    assert changed_stages(project, env) == set()
