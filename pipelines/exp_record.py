"""What a flow run records: its finished state as a DVC experiment, and only what really ran.

``dvc exp save`` commits the workspace's ``dvc.lock`` and outputs under ``refs/exps`` of the
project (``dvc exp show`` lists it, ``dvc exp apply`` brings it back). DVC writes ``dvc.lock``
from the inputs as they are when a stage *ends*, so before saving, each stage's inputs are
compared with the fingerprint taken when it started (``refuse_if_inputs_changed``): an edit made
while a long stage ran fails the run instead of being recorded as used.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from petsml.errors import PetsError
from pipelines.dvc_graph import Snapshot, changed_sources, source_snapshot, uncached_outputs
from pipelines.shell import error_detail, git, stream_command
from pipelines.workspace import git_lock


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


def refuse_if_inputs_changed(workspace: Path, started: Snapshot) -> None:
    """Raise :class:`InputsChangedDuringRun` when an input changed since its stage started."""
    changed = changed_sources(started, source_snapshot(workspace, list(started)))
    if changed:
        raise InputsChangedDuringRun(changed, workspace)


def files_to_record(workspace: Path, isolated: bool) -> list[str]:
    """Untracked files the experiment commit must hold (``dvc exp save -I``).

    An isolated workspace started clean from HEAD, so every untracked file in it is either
    carried over from the project or made by the run. In the project itself only what DVC
    wrote goes in: outputs with ``cache: false`` and the ``.gitignore`` files for the others.
    """
    listed = git(workspace, "ls-files", "-z", "--others", "--exclude-standard")
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
        baseline = git(workspace_path, "rev-parse", "HEAD").strip()
        ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
        rev = git(project_path, "rev-parse", ref).strip()
    if saved.get("ref") and saved["ref"] != rev:
        logger.warning("dvc exp save reported %s, %s points at %s", saved["ref"], ref, rev)
    logger.info("DVC experiment %s (%s) on baseline %s", name, rev[:7], baseline[:7])
    return {"name": name, "rev": rev, "baseline": baseline, "ref": ref}
