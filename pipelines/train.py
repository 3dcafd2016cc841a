"""Prefect flow ``pets-train``: the DVC pipeline as one Prefect task per DVC stage.

The stage list and its order come from DVC (``pipelines.dvc_graph.stage_order``), so a stage
added to ``dvc.yaml`` or a strategy added to ``train.strategies`` shows up here unchanged. Each
task runs ``dvc repro --single-item <stage>``: DVC still decides what is up to date (unchanged
stages print "didn't change, skipping") and every artefact stays DVC-tracked.

Parameter overrides never touch the project's ``params.yaml``. A run with overrides (or with
``isolate=True``) works in an isolated workspace: a git worktree of ``HEAD`` under
``.dvc/tmp/flows/`` carrying the uncommitted changes of the project, sharing its DVC cache (and
run cache, so stages already computed anywhere are restored, not recomputed). The overrides go
into that copy's ``params.yaml`` through the same code ``dvc exp run -S`` uses, the stages run
there one task each, and the result is saved as a DVC experiment (``dvc exp save``) of the
project: ``dvc exp show`` lists it with its params and metrics, ``dvc exp apply <name>`` brings
it into the workspace. Without overrides the stages run in the project itself and the finished
state is recorded the same way. Only what ran is recorded: each stage's code, params and
command are fingerprinted when it starts, and when any changed before the run ends (an edit
made while a long stage ran) the flow fails naming them instead of saving the experiment.

    python -m pipelines.train                       # whole pipeline, params.yaml as committed
    python -m pipelines.train --targets split       # data stages only
    python -m pipelines.train --backbone resnet50 --epochs 3 -S train.patience=2
    python -m pipelines.train --serve               # weekly schedule without a work pool
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run
from prefect.runtime import task_run as current_task_run
from prefect.tasks import exponential_backoff

from petsml.errors import PetsError
from pipelines.dvc_graph import (
    Snapshot,
    apply_overrides,
    changed_sources,
    dvc,
    source_snapshot,
    stage_order,
    tool_env,
    uncached_outputs,
)

try:  # POSIX: serialise git worktree/ref updates across processes too
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FLOW_NAME = "pets-train"
DEPLOYMENT_NAME = "weekly-retrain"
WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00: retrain -> register challenger -> gate decides
DEFAULT_STAGE_TIMEOUT_S = 6 * 3600.0
DEFAULT_RETRY_STAGES = ("download",)  # the stages that touch the network
WORKSPACES = Path(".dvc") / "tmp" / "flows"  # isolated workspaces: ignored by git and DVC
PROGRESS_EVERY_S = 5.0
KILL_GRACE_S = 10.0

_STATUS = (
    ("Running stage '", "ran"),
    ("is cached - skipping run", "restored"),
    ("didn't change, skipping", "skipped"),
)


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and quotes its own error."""

    def __init__(self, stage: str, detail: str, returncode: int | None = None) -> None:
        self.stage = stage
        self.detail = detail
        self.returncode = returncode
        code = f" (exit {returncode})" if returncode is not None else ""
        super().__init__(f"DVC stage '{stage}' failed{code}: {detail}")


class StageTimeout(StageFailed):
    """A DVC stage ran past ``stage_timeout_s``; its process group was killed."""


class InputsChangedDuringRun(PetsError):
    """A stage's code, params or command changed after the stage started: nothing is recorded.

    ``dvc.lock`` holds the inputs as they were when each stage *ended*, so saving would
    record an edit the stage never ran with. The message names each stage and input.
    """

    def __init__(self, changed: list[tuple[str, str]], workspace: Path) -> None:
        self.changed = changed
        listed = "\n".join(f"  {what} (stage {stage})" for stage, what in changed)
        super().__init__(
            f"{workspace}: these inputs changed after their stage had started, so its outputs "
            f"were made from the old version:\n{listed}\n"
            "Not saving a DVC experiment (dvc.lock would claim the new version was used). "
            "Re-run the flow once the edits are done; DVC re-runs just the stages they affect."
        )


# --------------------------------------------------------------------------- subprocesses


def _pump(stream: Any, name: str, lines: queue.Queue) -> None:
    """Split a byte stream into lines; ``\\r``-terminated pieces are progress-bar updates."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    while chunk := stream.read1(65536):
        buffer += decoder.decode(chunk)
        while match := re.search(r"[\r\n]", buffer):
            end = match.start()
            lines.put((name, buffer[:end], buffer[end] == "\r"))
            buffer = buffer[end + 1 :]
    buffer += decoder.decode(b"", final=True)
    if buffer:
        lines.put((name, buffer, False))
    lines.put((name, None, False))


def _kill(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def stream_command(
    cmd: list[str],
    cwd: Path,
    logger: logging.Logger | logging.LoggerAdapter,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    on_line: Any = None,
) -> tuple[int, list[str]]:
    """Run ``cmd``, log its output line by line as it comes, kill it after ``timeout_s``.

    Returns the exit code and the last lines of stderr. The child runs in its own process
    group, so a timeout or a cancelled flow kills the stage's workers too.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=tool_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True).start()
    stderr_tail: deque[str] = deque(maxlen=200)
    last_progress: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    open_streams = 2
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                name, line, progress = lines.get(timeout=min(0.5, remaining))
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            line = line.rstrip()
            if not line.strip():
                continue
            if progress:
                now = time.monotonic()
                if now - last_progress.get(name, -PROGRESS_EVERY_S) < PROGRESS_EVERY_S:
                    continue
                last_progress[name] = now
            elif name == "stderr":
                stderr_tail.append(line)
            if on_line is not None:
                on_line(name, line)
            level = logging.INFO
            if line.startswith("ERROR"):
                level = logging.ERROR
            elif line.startswith("WARNING"):
                level = logging.WARNING
            logger.log(level, "%s", line)
        returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (TimeoutError, subprocess.TimeoutExpired):
        _kill(proc)
        raise TimeoutError(f"timed out after {timeout_s:g} s") from None
    finally:
        _kill(proc)
    return returncode, list(stderr_tail)


def error_detail(stderr_lines: list[str]) -> str:
    """The stage's own error (``ERROR [stage]: ...`` and what follows), else the stderr tail."""
    lines = [line for line in stderr_lines if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("ERROR [")]
    if starts:
        block = []
        for line in lines[starts[-1] :]:
            if line.startswith("ERROR: failed to reproduce"):
                break
            block.append(line)
        return "\n".join(block)
    return "\n".join(lines[-15:]) or "no error output"


# --------------------------------------------------------------------------- the stage task


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_dvc_stage(
    stage: str,
    workspace: str,
    force: bool = False,
    timeout_s: float = DEFAULT_STAGE_TIMEOUT_S,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``dvc repro --single-item <stage>`` in ``workspace``; DVC skips it when unchanged."""
    logger = get_run_logger()
    status = {"value": "unknown"}

    def watch(name: str, line: str) -> None:
        if name == "stdout" and status["value"] == "unknown":
            for marker, value in _STATUS:
                if marker in line:
                    status["value"] = value

    cmd = ["dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    started = time.monotonic()
    try:
        returncode, stderr_tail = stream_command(
            cmd, Path(workspace), logger, timeout_s, extra_env, on_line=watch
        )
    except TimeoutError as error:
        raise StageTimeout(stage, f"{error}; killed it (raise timeout_s?)") from None
    seconds = round(time.monotonic() - started, 2)
    if returncode != 0:
        raise StageFailed(stage, error_detail(stderr_tail), returncode)
    attempt = current_task_run.run_count or 1
    logger.info("stage %s: %s in %.1f s (attempt %d)", stage, status["value"], seconds, attempt)
    return {"stage": stage, "status": status["value"], "seconds": seconds, "attempts": attempt}


# --------------------------------------------------------------------------- workspaces


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across threads and processes (one ``flock`` per open file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def git_lock(project: Path) -> contextlib.AbstractContextManager[None]:
    """Serialises worktree add/remove and ``dvc exp save`` (shared refs, EXEC_* heads)."""
    common = Path(_git(project, "rev-parse", "--git-common-dir").strip())
    if not common.is_absolute():
        common = project / common
    return _file_lock(common / "pets-flows.lock")


def slug(text: str) -> str:
    """A string usable as a git ref component and a folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")
    return re.sub(r"\.{2,}", ".", cleaned)[:80] or "run"


def _git_identity_env(project: Path) -> dict[str, str]:
    """``dvc exp save`` commits: give git a committer when the machine has none configured."""
    probe = subprocess.run(
        ["git", "config", "user.email"], cwd=project, capture_output=True, text=True
    )
    if probe.stdout.strip() or os.environ.get("GIT_COMMITTER_EMAIL"):
        return {}
    who = {"NAME": "pets-train flow", "EMAIL": "pets-train@localhost"}
    return {
        f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER") for key, value in who.items()
    }


def create_workspace(project: Path, name: str) -> Path:
    """A git worktree of HEAD plus the project's uncommitted changes (staged or not), on the
    shared cache: an isolated run uses the files as they are on disk, as a plain run would."""
    path = project / WORKSPACES / name
    cache_dir = dvc(project, "cache", "dir").strip()
    cache_dir = str((project / cache_dir).resolve()) if cache_dir else str(project / ".dvc/cache")
    with git_lock(project):
        _git(project, "worktree", "prune")
        _git(project, "worktree", "add", "--detach", "--force", str(path), "HEAD")
    for rel in uncommitted_files(project):
        _carry(project / rel, path / rel)
    dvc(path, "cache", "dir", "--local", cache_dir)
    return path


def uncommitted_files(project: Path) -> list[str]:
    """Every path where the project's files on disk differ from ``HEAD``: staged or not.

    ``git diff HEAD`` compares the work tree with ``HEAD`` whatever the index holds, so a
    ``git add``-ed edit, a staged new file, a deletion and both sides of a rename (as a
    delete plus an add) are all listed; untracked files that git does not ignore are added.
    """
    changed = _git(project, "diff", "HEAD", "--name-only", "-z", "--no-renames", "--")
    untracked = _git(project, "ls-files", "-z", "--others", "--exclude-standard")
    return sorted(set(filter(None, (changed + untracked).split("\0"))))


def _carry(source: Path, target: Path) -> None:
    """Make ``target`` what ``source`` is on disk: a copy, a link, or nothing."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    if source.is_symlink():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.readlink(source))
    elif source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def files_to_record(workspace: Path, isolated: bool) -> list[str]:
    """Untracked files the experiment commit must hold (``dvc exp save -I``).

    An isolated workspace started clean from HEAD, so every untracked file in it is either
    carried over from the project or made by the run. In the project itself only what DVC
    wrote goes in: outputs with ``cache: false`` and the ``.gitignore`` files for the others.
    """
    listed = _git(workspace, "ls-files", "-z", "--others", "--exclude-standard")
    untracked = [rel for rel in listed.split("\0") if rel and rel != "dvc.lock"]  # DVC adds it
    if isolated:
        return untracked
    outputs = uncached_outputs(workspace)
    return [
        rel
        for rel in untracked
        if Path(rel).name == ".gitignore"
        or any(rel == out or rel.startswith(f"{out}/") for out in outputs)
    ]


def remove_workspace(project: Path, path: Path) -> None:
    with git_lock(project):
        with contextlib.suppress(RuntimeError):
            _git(project, "worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            _git(project, "worktree", "prune")


# --------------------------------------------------------------------------- records


@task(name="dvc-exp-save", cache_policy=NO_CACHE)
def save_experiment(
    project: str,
    workspace: str,
    name: str,
    stages: list[str],
    message: str,
    include: list[str] | None = None,
) -> dict[str, str]:
    """Record the workspace's ``stages`` as a DVC experiment of the project (``dvc exp save``).

    ``include`` are untracked files the commit must hold (``-I``); nothing is staged by hand,
    DVC adds them itself.
    """
    logger = get_run_logger()
    workspace_path, project_path = Path(workspace), Path(project)
    env = _git_identity_env(project_path)
    cmd = ["dvc", "exp", "save", "--json", "--name", name, "--message", message]
    for rel in include or []:
        cmd += ["--include-untracked", rel]
    cmd += stages
    with git_lock(project_path):
        lines: list[str] = []
        returncode, stderr = stream_command(
            cmd, workspace_path, logger, 600, env, on_line=lambda n, line: lines.append(line)
        )
        if returncode != 0:
            raise RuntimeError(f"dvc exp save failed: {error_detail(stderr)}")
        saved = json.loads("".join(line for line in lines if line.strip().startswith("{")))
        baseline = _git(workspace_path, "rev-parse", "HEAD").strip()
        ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
        rev = _git(project_path, "rev-parse", ref).strip()
    if saved.get("ref") and saved["ref"] != rev:
        logger.warning("dvc exp save reported %s, %s points at %s", saved["ref"], ref, rev)
    logger.info("DVC experiment %s (%s) on baseline %s", name, rev[:7], baseline[:7])
    return {"name": name, "rev": rev, "baseline": baseline, "ref": ref}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_parent_run_id(runs: Any) -> str | None:
    """The MLflow parent run id in ``reports/mlflow_runs.json``, whatever its exact layout."""
    if isinstance(runs, Mapping):
        for key in ("parent_run_id", "parent_id", "run_id"):
            if isinstance(runs.get(key), str):
                return runs[key]
        parent = runs.get("parent")
        if isinstance(parent, str):
            return parent
        if isinstance(parent, Mapping):
            return find_parent_run_id(parent)
    return None


def collect_results(workspace: Path) -> dict[str, Any]:
    """What a run produced, read from the workspace before it goes away."""
    from petsml import paths

    summaries = {}
    models = workspace / paths.MODELS
    if models.is_dir():
        for summary in sorted(models.glob("*/summary.json")):
            summaries[summary.parent.name] = _read_json(summary)
    runs = _read_json(workspace / paths.MLFLOW_RUNS)
    return {
        "metrics": _read_json(workspace / paths.METRICS),
        "summaries": summaries,
        "mlflow_parent_run_id": find_parent_run_id(runs),
        "registry": _read_json(workspace / paths.REGISTRY_REPORT),
    }


def _markdown(result: Mapping[str, Any]) -> str:
    exp = result.get("experiment") or {}
    lines = [
        f"## {FLOW_NAME}: {len(result['stages'])} DVC stage(s)",
        "",
        f"- workspace: `{result['workspace']}`{' (isolated)' if result['isolated'] else ''}",
        f"- overrides: `{' '.join(result['overrides']) or 'none'}`",
        f"- DVC experiment: `{exp.get('name', '-')}` rev `{exp.get('rev', '-')}` "
        f"(baseline `{exp.get('baseline', '-')}`)",
        f"- MLflow parent run: `{result.get('mlflow_parent_run_id') or '-'}`",
        "",
        "| stage | status | seconds | attempts |",
        "| --- | --- | ---: | ---: |",
    ]
    for row in result["stages"]:
        lines.append(f"| {row['stage']} | {row['status']} | {row['seconds']} | {row['attempts']} |")
    for strategy, summary in (result.get("summaries") or {}).items():
        if isinstance(summary, Mapping):
            lines.append(
                f"\n`{strategy}`: val accuracy {summary.get('val_accuracy')}, "
                f"train {summary.get('train_seconds')} s"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the flow


def resolve_project(project_dir: str | None) -> Path:
    """``project_dir``, else the working directory when it holds dvc.yaml, else this repo."""
    if project_dir:
        path = Path(project_dir).expanduser().resolve()
    elif (Path.cwd() / "dvc.yaml").exists():
        path = Path.cwd().resolve()
    else:
        path = Path(__file__).resolve().parents[1]
    if not (path / "dvc.yaml").exists():
        raise FileNotFoundError(f"{path}: no dvc.yaml; pass project_dir=<the project root>")
    return path


def build_overrides(
    task: str | None = None,
    backbone: str | None = None,
    strategies: list[str] | None = None,
    epochs: int | None = None,
    base_url: str | None = None,
    seed: int | None = None,
    set_params: list[str] | None = None,
) -> list[str]:
    """Flow parameters as ``dvc exp run -S`` overrides (named ones first, then ``set_params``)."""
    from pipelines.dvc_graph import hydra_value

    named = {
        "data.task": task,
        "model.backbone": backbone,
        "train.strategies": strategies,
        "train.epochs": epochs,
        "data.base_url": base_url,
        "train.seed": seed,
    }
    out = [f"{key}={hydra_value(value)}" for key, value in named.items() if value is not None]
    return out + [item for item in (set_params or []) if item.strip()]


def run_stage(
    stage: str, workspace: str, force: bool, config: dict[str, Any], extra_env: dict[str, str]
) -> dict[str, Any]:
    """One stage task; whatever stops it, the error that reaches the flow names the stage."""
    runner = run_dvc_stage.with_options(**config["options"])
    try:
        return runner(stage, workspace, force, config["timeout_s"], extra_env)
    except StageFailed:
        raise
    except Exception as error:
        raise StageFailed(stage, f"{type(error).__name__}: {error}") from error


def check_params(params_file: Path) -> Any:
    """Validate the whole ``params.yaml`` a run will use, before it spends time on any stage.

    Raises :class:`petsml.config.ConfigError` naming the bad key. The one place flows validate
    parameters (``petsml.config.load_params`` for now; a stricter whole-file check can take
    its place here).
    """
    from petsml.config import load_params

    return load_params(params_file)


def refuse_if_inputs_changed(workspace: Path, started: Snapshot) -> None:
    """Raise :class:`InputsChangedDuringRun` when an input changed since its stage started."""
    changed = changed_sources(started, source_snapshot(workspace, list(started)))
    if changed:
        raise InputsChangedDuringRun(changed, workspace)


def _retry_delays(retries: int, base_s: float) -> list[float]:
    return exponential_backoff(backoff_factor=base_s)(retries) if retries else []


@flow(name=FLOW_NAME, persist_result=True, log_prints=True)
def train_pipeline(
    targets: list[str] | None = None,
    task: Literal["breed", "species"] | None = None,
    backbone: str | None = None,
    strategies: list[str] | None = None,
    epochs: int | None = None,
    base_url: str | None = None,
    seed: int | None = None,
    set_params: list[str] | None = None,
    experiment_name: str | None = None,
    isolate: bool = False,
    keep_workspace: bool = False,
    save_exp: bool = True,
    force: bool = False,
    stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S,
    retry_stages: list[str] | None = None,
    retries: int = 3,
    retry_delay_s: float = 10.0,
    project_dir: str | None = None,
) -> dict[str, Any]:
    """Run the DVC pipeline stage by stage; with overrides, as an isolated DVC experiment.

    Args:
        targets: DVC targets to bring up to date with everything upstream (``split``,
            ``train``, ``train@svm_early``); default the whole pipeline.
        task: overrides ``data.task`` (breed | species).
        backbone: overrides ``model.backbone``.
        strategies: overrides ``train.strategies``.
        epochs: overrides ``train.epochs``.
        base_url: overrides ``data.base_url`` (mirror URL or folder of the two archives).
        seed: overrides ``train.seed``.
        set_params: more overrides in ``dvc exp run -S`` syntax, e.g. ``["split.seed=3"]``.
        experiment_name: DVC experiment name; default ``<flow run name>-<id>``.
        isolate: run in an isolated workspace even without overrides.
        keep_workspace: keep the isolated workspace (under ``.dvc/tmp/flows/``) afterwards.
        save_exp: record the finished state as a DVC experiment (``dvc exp save``).
        force: re-run stages even when DVC finds them unchanged (``dvc repro --force``).
        stage_timeout_s: timeout of every stage task, in seconds.
        retry_stages: stages retried on failure (default ``["download"]``).
        retries: how many times those stages are retried.
        retry_delay_s: first retry delay; it doubles on each further retry.
        project_dir: the project root; default the working directory (or this repository).
    """
    logger = get_run_logger()
    project = resolve_project(project_dir)
    overrides = build_overrides(task, backbone, strategies, epochs, base_url, seed, set_params)
    isolated = isolate or bool(overrides)
    run_name = current_flow_run.get_name() or "run"
    run_id = str(current_flow_run.get_id() or uuid.uuid4().hex)
    name = slug(experiment_name or f"{run_name}-{run_id.replace('-', '')[:6]}")
    workspace = project
    extra_env: dict[str, str] = {}
    if isolated and not os.environ.get("MLFLOW_TRACKING_URI"):
        # every workspace logs to the project's tracking store, not to a copy that goes away
        from petsml.tracking.store import default_tracking_uri

        extra_env["MLFLOW_TRACKING_URI"] = default_tracking_uri(project)
    retried = set(DEFAULT_RETRY_STAGES if retry_stages is None else retry_stages)

    def options_for(stage: str) -> dict[str, Any]:
        # Prefect's timeout is the backstop; the task's own deadline (stage_timeout_s) fires
        # first, kills the stage's process group and names the stage.
        options: dict[str, Any] = {"timeout_seconds": stage_timeout_s + KILL_GRACE_S + 10}
        if stage in retried or stage.split("@", 1)[0] in retried:
            options["retries"] = retries
            options["retry_delay_seconds"] = _retry_delays(retries, retry_delay_s)
        return {"options": options, "timeout_s": stage_timeout_s}

    lock = contextlib.nullcontext()
    try:
        if isolated:
            workspace = create_workspace(project, name)
            logger.info("isolated workspace %s", workspace)
            if overrides:
                apply_overrides(workspace / "params.yaml", overrides)
                logger.info("overrides (dvc exp run -S): %s", " ".join(overrides))
        else:
            lock = _file_lock(project / ".dvc" / "tmp" / "pets-flow.lock")
        check_params(workspace / "params.yaml")  # before any stage: fails naming the bad key
        with lock:
            order = stage_order(workspace, targets)
            logger.info("DVC stages in order: %s", " -> ".join(order))
            stages = []
            started: Snapshot = {}
            for stage in order:
                started.update(source_snapshot(workspace, [stage]))
                stages.append(
                    run_stage(stage, str(workspace), force, options_for(stage), extra_env)
                )
            refuse_if_inputs_changed(workspace, started)
            experiment = None
            if save_exp:
                message = f"{FLOW_NAME} flow run {run_name} ({run_id})"
                if overrides:
                    message += ": " + " ".join(overrides)
                include = files_to_record(workspace, isolated)
                experiment = save_experiment(
                    str(project), str(workspace), name, order, message, include
                )
            result: dict[str, Any] = {
                "flow_run": {"id": run_id, "name": run_name},
                "project": str(project),
                "workspace": str(workspace),
                "isolated": isolated,
                "targets": list(targets or []),
                "overrides": overrides,
                "stages": stages,
                "experiment": experiment,
                **collect_results(workspace),
            }
    finally:
        if isolated and workspace != project and not keep_workspace:
            remove_workspace(project, workspace)
    create_markdown_artifact(
        _markdown(result), key="pets-train-run", description="DVC stages, experiment, MLflow run"
    )
    return result


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """Command-line options mirroring the flow's parameters one to one."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.train",
        description="Run the DVC pipeline as the Prefect flow 'pets-train' (ephemeral Prefect "
        "unless PREFECT_API_URL points at a server), or --serve it on a weekly schedule.",
    )
    add = parser.add_argument
    add("--targets", nargs="+", metavar="STAGE", help="DVC targets; default the whole pipeline")
    add("--task", choices=["breed", "species"], help="override data.task")
    add("--backbone", help="override model.backbone")
    add("--strategies", nargs="+", metavar="STRATEGY", help="override train.strategies")
    add("--epochs", type=int, help="override train.epochs")
    add("--base-url", help="override data.base_url")
    add("--seed", type=int, help="override train.seed")
    add(
        "-S",
        "--set-param",
        dest="set_params",
        action="append",
        metavar="KEY=VALUE",
        help="any other override, as for dvc exp run -S (repeatable)",
    )
    add("--experiment-name", help="DVC experiment name")
    add("--isolate", action="store_true", help="isolated workspace even without overrides")
    add("--keep-workspace", action="store_true", help="keep the isolated workspace")
    add("--no-save-exp", dest="save_exp", action="store_false", help="skip dvc exp save")
    add("--force", action="store_true", help="re-run stages DVC finds unchanged")
    add("--stage-timeout-s", type=float, default=DEFAULT_STAGE_TIMEOUT_S, help="per stage")
    add("--retry-stages", nargs="*", metavar="STAGE", help="default: download")
    add("--retries", type=int, default=3, help="retries of the retried stages")
    add("--retry-delay-s", type=float, default=10.0, help="first retry delay (doubles)")
    add("--project-dir", help="project root (default: working directory)")
    serve = parser.add_argument_group("serving (no work pool needed)")
    serve.add_argument("--serve", action="store_true", help="serve the flow on a schedule")
    serve.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name")
    serve.add_argument("--cron", default=WEEKLY_CRON, help="schedule (cron, UTC)")
    return parser


SERVE_ONLY = {"serve", "name", "cron"}


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    serve = {key: args.pop(key) for key in SERVE_ONLY}
    if serve["serve"]:
        parameters = {key: value for key, value in args.items() if value is not None}
        train_pipeline.serve(name=serve["name"], cron=serve["cron"], parameters=parameters)
        return 0
    state = train_pipeline(**args, return_state=True)
    if not state.is_completed():
        print(f"\n{FLOW_NAME} {state.name}: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    print(json.dumps({k: result[k] for k in ("stages", "experiment", "mlflow_parent_run_id")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
