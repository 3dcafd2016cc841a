"""What the flows know about DVC: the stage graph, read from ``dvc.yaml`` by DVC itself.

Nothing here keeps a list of stages: the order comes from DVC's own repro planner over
``Repo.index.graph`` (so ``foreach`` stages expand to ``train@<strategy>`` from the current
``params.yaml``), and experiments are read back through ``dvc exp show --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class GraphError(ValueError):
    """``dvc.yaml`` could not be read, or a target names no stage; the message says which."""


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``dvc``/``python -m stages.X`` subprocesses: this venv's bin first."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[:1] != [bindir]:
        env["PATH"] = os.pathsep.join(filter(None, [bindir, path]))
    env.setdefault("PYTHONUNBUFFERED", "1")  # stage logs reach the flow as they happen
    env.setdefault("TQDM_MININTERVAL", "5")  # progress bars, but not a log line per tick
    env.update(extra or {})
    return env


def stage_order(project_dir: str | Path, targets: Iterable[str] | None = None) -> list[str]:
    """Stage addresses in the order ``dvc repro [targets]`` would run them.

    ``targets`` are anything ``dvc repro`` accepts (``split``, ``train`` for every foreach
    item, ``train@svm_early``, ``path/to/dvc.yaml:stage``); the result holds them and
    everything upstream of them. ``None`` means the whole project. ``dvc add`` files are left
    out (nothing to run); ``dvc import`` stages stay in (repro refreshes them).
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    targets = list(targets or [])
    try:
        with Repo(str(project_dir)) as repo:
            graph = get_active_graph(repo.index.graph)
            absolute = [_from_root(repo.root_dir, target) for target in targets]
            selected = collect_stages(repo, absolute) if targets else None
            planned = plan_repro(graph, selected)
            runnable = [s for s in planned if s.cmd is not None or s.is_import]
            order = [_address(repo.root_dir, stage) for stage in runnable]
    except DvcException as error:
        what = f"targets {targets}" if targets else "the pipeline"
        raise GraphError(f"{project_dir}/dvc.yaml: cannot plan {what}: {error}") from None
    return order


def _from_root(root: str, target: str) -> str:
    """DVC resolves targets against the working directory; anchor them at the repo root."""
    from dvc.dvcfile import PROJECT_FILE
    from dvc.utils import parse_target

    path, name = parse_target(target)
    path = os.path.join(root, path or PROJECT_FILE)
    return f"{path}:{name}" if name else path


def uncached_outputs(project_dir: str | Path) -> list[str]:
    """Outputs with ``cache: false`` (metrics, reports): git, not the DVC cache, keeps them."""
    from dvc.repo import Repo

    with Repo(str(project_dir)) as repo:
        root = repo.root_dir
        return sorted(
            Path(os.path.relpath(out.fs_path, root)).as_posix()
            for stage in repo.index.stages
            for out in stage.outs
            if not out.use_cache
        )


def _address(root: str, stage: Any) -> str:
    """The stage's address relative to the repo root (DVC's ``addressing`` is cwd-relative)."""
    from dvc.dvcfile import PROJECT_FILE

    rel = Path(os.path.relpath(stage.path, root)).as_posix()
    name = getattr(stage, "name", None)
    if not name:
        return rel
    return name if rel == PROJECT_FILE else f"{rel}:{name}"


def dvc(project_dir: str | Path, *args: str, timeout: float = 300) -> str:
    """Run a short ``dvc`` command in ``project_dir`` and return its stdout."""
    result = subprocess.run(
        ["dvc", *args],
        cwd=project_dir,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise RuntimeError(f"dvc {' '.join(args)} failed in {project_dir}:\n{tail}")
    return result.stdout


def experiments(project_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every DVC experiment of the current baseline, by name: rev, params, metrics."""
    shown = json.loads(dvc(project_dir, "exp", "show", "--json", "--no-fetch") or "[]")
    found: dict[str, dict[str, Any]] = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                found[rev.get("name") or rev["rev"]] = {
                    "rev": rev["rev"],
                    "baseline": baseline.get("rev"),
                    "params": {
                        path: (entry or {}).get("data", {})
                        for path, entry in (data.get("params") or {}).items()
                    },
                    "metrics": {
                        path: (entry or {}).get("data", {})
                        for path, entry in (data.get("metrics") or {}).items()
                    },
                }
    return found


def hydra_value(value: Any) -> str:
    """A Python value written in the override grammar ``dvc exp run -S key=value`` parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def apply_overrides(params_file: str | Path, overrides: list[str]) -> None:
    """Apply ``-S``-style overrides to ``params_file`` with DVC's own ``exp run -S`` code.

    Only ever called on an isolated workspace's copy: the committed ``params.yaml`` of the
    project is never edited.
    """
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    try:
        dvc_apply_overrides(str(params_file), list(overrides))
    except DvcException as error:
        cause = f" ({error.__cause__})" if error.__cause__ else ""
        raise GraphError(f"invalid parameter override in {overrides}: {error}{cause}") from None


# --------------------------------------------------------------------------- what a stage ran on

Snapshot = dict[str, dict[str, str | None]]


def source_snapshot(project_dir: str | Path, stages: Iterable[str]) -> Snapshot:
    """``stage -> {dependency: fingerprint}`` for the inputs a person edits, as DVC hashes them.

    Taken when a stage starts and again before the run is recorded: DVC writes ``dvc.lock``
    from the files as they are when a stage *ends*, so an edit made while a long stage ran
    would otherwise be recorded as if the stage had used it. Covered: file and folder deps
    (DVC's md5, ``.dvcignore`` applies), each ``params`` key, and the stage's ``cmd``. Deps
    that are outputs of a stage (``data/splits``, ``models``) are left out: DVC made them;
    so are imports and remote URLs (DVC tracks those itself, and hashing them is slow).
    A stage that no longer exists (``foreach`` list edited) maps to ``{"stage": None}``.
    """
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    wanted = list(stages)
    snapshot: Snapshot = {stage: {"stage": None} for stage in wanted}
    with Repo(str(project_dir)) as repo:
        root = repo.root_dir
        outputs = [Path(out.fs_path) for out in repo.index.outs]
        by_address = {_address(root, stage): stage for stage in repo.index.stages}
        for address in wanted:
            stage = by_address.get(address)
            if stage is None:
                continue
            found: dict[str, str | None] = {f"cmd of stage {address}": json.dumps(stage.cmd)}
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    found.update(_param_fingerprints(root, dep))
                elif _local(dep) and not _made_by_a_stage(Path(dep.fs_path), outputs):
                    found[_rel(root, dep.fs_path)] = _hash(dep)
            snapshot[address] = found
    return snapshot


def changed_sources(started: Snapshot, now: Snapshot) -> list[tuple[str, str]]:
    """``(stage, dependency)`` pairs whose fingerprint differs between the two snapshots."""
    changed = []
    for stage, before in started.items():
        after = now.get(stage, {"stage": None})
        for key in sorted(set(before) | set(after)):
            if before.get(key, "<absent>") != after.get(key, "<absent>"):
                changed.append((stage, key))
    return changed


def _rel(root: str, path: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _local(dep: Any) -> bool:
    """A file on this machine; ``dvc import`` and remote deps are DVC's (and slow) to hash."""
    from dvc.dependency.repo import RepoDependency

    return not isinstance(dep, RepoDependency) and getattr(dep, "protocol", "local") == "local"


def _made_by_a_stage(path: Path, outputs: list[Path]) -> bool:
    return any(path == out or path in out.parents or out in path.parents for out in outputs)


def _hash(dep: Any) -> str | None:
    """DVC's hash of a file/folder dep (its state db keeps it cheap); ``None`` when missing."""
    try:
        info = dep.get_hash()
    except Exception:  # noqa: BLE001 - a missing or unreadable dep is a fingerprint too
        return None
    return str(info.value) if info and info.value else None


def _param_fingerprints(root: str, dep: Any) -> dict[str, str | None]:
    """One fingerprint per params key the stage lists (a whole section counts as one key)."""
    from dvc.exceptions import DvcException

    name = _rel(root, dep.fs_path)
    try:
        values = dep.read_params()
    except DvcException:
        values = {}
    keys = list(dep.params) if dep.params else sorted(values)
    return {
        f"{name}:{key}": json.dumps(values[key], sort_keys=True, default=str)
        if key in values
        else None
        for key in keys
    }
