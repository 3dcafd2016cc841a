"""Where a flow run works: the project itself, or an isolated git worktree of it, and the locks.

An isolated workspace is a git worktree of ``HEAD`` under ``.dvc/tmp/flows/`` (ignored by git
and DVC) carrying the project's uncommitted changes, on the project's DVC cache: the run sees
the files as they are on disk, as a plain run would, and never edits the project's
``params.yaml``. Worktree and ref updates are serialised across threads and processes
(``git_lock``); runs in the project itself take one lock each (``project_lock``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipelines.dvc_graph import dvc
from pipelines.shell import git

try:  # POSIX: serialise git worktree/ref updates across processes too
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

WORKSPACES = Path(".dvc") / "tmp" / "flows"  # isolated workspaces: ignored by git and DVC


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


def slug(text: str) -> str:
    """A string usable as a git ref component and a folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")
    return re.sub(r"\.{2,}", ".", cleaned)[:80] or "run"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
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
    common = Path(git(project, "rev-parse", "--git-common-dir").strip())
    if not common.is_absolute():
        common = project / common
    return file_lock(common / "pets-flows.lock")


def project_lock(project: Path) -> contextlib.AbstractContextManager[None]:
    """One pipeline at a time in the project itself (isolated workspaces need none)."""
    return file_lock(project / ".dvc" / "tmp" / "pets-flow.lock")


def create_workspace(project: Path, name: str) -> Path:
    """A git worktree of HEAD plus the project's uncommitted changes (staged or not), on the
    shared cache: an isolated run uses the files as they are on disk, as a plain run would."""
    path = project / WORKSPACES / name
    cache_dir = dvc(project, "cache", "dir").strip()
    cache_dir = str((project / cache_dir).resolve()) if cache_dir else str(project / ".dvc/cache")
    with git_lock(project):
        git(project, "worktree", "prune")
        git(project, "worktree", "add", "--detach", "--force", str(path), "HEAD")
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
    changed = git(project, "diff", "HEAD", "--name-only", "-z", "--no-renames", "--")
    untracked = git(project, "ls-files", "-z", "--others", "--exclude-standard")
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


def remove_workspace(project: Path, path: Path) -> None:
    """Remove an isolated workspace and git's record of it; what cannot go is left quietly."""
    with git_lock(project):
        with contextlib.suppress(RuntimeError):
            git(project, "worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            git(project, "worktree", "prune")


@contextlib.contextmanager
def open_workspace(project: Path, name: str, isolated: bool, keep: bool) -> Iterator[Path]:
    """The folder a run works in: a new isolated workspace ``name`` (removed when the run ends
    unless ``keep``), or the project itself."""
    if not isolated:
        yield project
        return
    workspace = create_workspace(project, name)
    try:
        yield workspace
    finally:
        if not keep:
            remove_workspace(project, workspace)
