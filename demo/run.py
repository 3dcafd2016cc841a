"""``make demo``: the whole pipeline, then the web page, on the 185 real photos in demo/pets.

Offline and in a few minutes on a laptop CPU: packs ``demo/pets`` as the two official archives
into ``.demo/mirror`` (``data.base_url`` accepts a plain folder), copies this project's files
into ``.demo/project`` (so your own ``data/``, ``models/`` and MLflow store are never touched),
sets the params a 5-photos-per-breed set needs there, runs ``dvc repro`` and serves the
registered champion with ``pets web``. ``.demo/`` is ignored by git; delete it to start over.

    python demo/run.py [--port 8000] [--no-serve]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "demo" / "pets"
WORK = ROOT / ".demo"
# what 4 trainval + 1 test photo per breed needs (the official set has ~200 per breed)
OVERRIDES = {
    "validate.min_images_per_breed": 1,
    "validate.max_images_per_breed": 250,
    "split.val_fraction": 0.25,  # 1 validation photo per breed, 3 for training
    "train.strategies": ["feature_extractor", "svm_early"],
}


def pack(folder: Path, out: Path) -> dict[str, str]:
    """images.tar.gz / annotations.tar.gz as the official archives; their md5 sums."""
    out.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for name in ("images", "annotations"):
        target = out / f"{name}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(folder / name, arcname=name)
        md5[name] = hashlib.md5(target.read_bytes()).hexdigest()
    return md5


def copy_project(dest: Path) -> None:
    """This project's tracked and not-ignored files (no data, models or store) into ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    for rel in filter(None, listed):
        if rel.startswith("demo/") or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != (ROOT / rel).read_bytes():
            shutil.copy2(ROOT / rel, target)


def set_params(project: Path, overrides: dict) -> None:
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def env() -> dict[str, str]:
    """This interpreter's tools first; the project's own store; git identity for commits."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out.pop("MLFLOW_TRACKING_URI", None)  # the demo's store is its own
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        out.setdefault(key, "pets demo")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        out.setdefault(key, "demo@example.invalid")
    return out


def git_snapshot(project: Path) -> None:
    """A git repository for the copy (runs are tagged with its commit; DVC wants one)."""
    run = lambda *a: subprocess.run(a, cwd=project, env=env(), check=True, capture_output=True)  # noqa: E731
    if not (project / ".git").exists():
        run("git", "init", "-q")
    run("git", "add", "-A")
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=project).returncode:
        run("git", "commit", "-qm", "demo project")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-serve", action="store_true", help="run the pipeline only")
    args = parser.parse_args()
    project = WORK / "project"
    md5 = pack(PHOTOS, WORK / "mirror")
    copy_project(project)
    mirror = {"data.base_url": str(WORK / "mirror"), "data.md5.images": md5["images"],
              "data.md5.annotations": md5["annotations"]}  # fmt: skip
    set_params(project, OVERRIDES | mirror)
    git_snapshot(project)
    print(f"demo: {sum(1 for _ in (PHOTOS / 'images').iterdir())} photos, pipeline in {project}",
          flush=True)  # fmt: skip
    started = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=project, env=env(), check=True)
    print(f"demo: pipeline done in {time.perf_counter() - started:.0f} s", flush=True)
    if args.no_serve:
        return
    pets = [sys.executable, "-m", "petsml.cli"]
    serve_env = env() | {"PYTHONPATH": str(project)}
    subprocess.run([*pets, "web", "--port", str(args.port)], cwd=project, env=serve_env)


if __name__ == "__main__":
    main()
