"""dvc.yaml's code deps are exactly the project modules each stage runs, and stay so.

A stage's modules are derived from the code: the static closure of its ``python -m stages.X``
module over every ``import`` statement, module-level or inside a function (lazy imports are
how `train` picks its strategy's code). A sys.modules check in a real interpreter keeps that
walk honest, and real DVC shows the consequence: edit a module, and `dvc status` flags exactly
the stages that run it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.project import (
    REPO,
    changed_stages,
    commit_without_running,
    make_project,
    run,
    tool_env,
)

pytestmark = pytest.mark.slow(seconds=30)

CODE_ROOTS = ("petsml", "stages")


# --------------------------------------------------------------------------- the code's view


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The project file that defines module ``name`` (None for third-party modules)."""
    parts = name.split(".")
    if parts[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement anywhere in ``path`` may load (a superset)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return names


@cache
def closure(entry: str) -> frozenset[str]:
    """Repo-relative files of every project module ``import entry`` can run, packages included."""
    seen: dict[str, Path] = {}
    todo = [entry]
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:depth])
            path = module_file(name)
            if path is not None and name not in seen:
                seen[name] = path
                todo.extend(imported_names(path, name))
    return frozenset(p.relative_to(REPO).as_posix() for p in seen.values())


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


def test_every_stage_depends_on_every_project_module_it_runs():
    missing = {
        name: sorted(f for f in closure(module) if not any(covers(d, f) for d in deps))
        for name, (module, deps) in stages().items()
    }
    missing = {name: files for name, files in missing.items() if files}
    assert not missing, f"add these to the stage's deps in dvc.yaml: {missing}"


def test_no_stage_depends_on_code_it_never_runs():
    extra = {}
    for name, (module, deps) in stages().items():
        for dep in code_deps(deps):
            path = REPO / dep
            files = (
                [p.relative_to(REPO).as_posix() for p in path.rglob("*.py")]
                if path.is_dir()
                else [dep]
            )
            unused = sorted(set(files) - closure(module))
            if unused:
                extra.setdefault(name, []).extend(unused)
    assert not extra, f"stages would re-run for code they never import: {extra}"


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
    folders = {d for _, deps in stages().values() for d in code_deps(deps) if (REPO / d).is_dir()}
    assert folders, "no stage has a code folder dep; this test would prove nothing"

    env = tool_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # write __pycache__/ as a user's python does
    modules = sorted({module for module, _ in stages().values()})
    run(project, sys.executable, "-c", "; ".join(f"import {m}" for m in modules), env=env)
    assert any(any((project / f).rglob("__pycache__")) for f in folders)
    assert changed_stages(project, env) == set()
