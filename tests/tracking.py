"""What the track stage reads and what it leaves: a tiny tracked project, logged executions.

``build_project`` writes a project directory as the pipeline leaves it just before the track
stage (tiny random-init models, metrics, evaluation files, split CSVs, a dvc.lock), so tests
need neither training nor DVC. ``execution`` logs what the track stage leaves in MLflow: a
parent run, one child per strategy with metrics, ``eval/predictions.csv`` and a pyfunc model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from petsml.data.breeds import BREEDS
from petsml.testing.fakedata import make_dataset, make_image_folder, split_rows
from tests.models import BACKBONE, DECODE_SIZE, INPUT_SIZE, make_tiny_model

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "pets-track-test"
STRATEGIES = ["feature_extractor", "finetune_top"]
SPLITS_MD5 = "0123456789abcdef0123456789abcdef.dir"
RAW_MD5 = "fedcba9876543210fedcba9876543210.dir"
EPOCHS = [
    {"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.2 * e, "val_loss": 1.5 / e,
     "val_accuracy": v, "lr": 1e-3 / e, "seconds": 1.5}
    for e, v in ((1, 0.30), (2, 0.55), (3, 0.50))
]  # fmt: skip
FOLDER_CLASSES = ("Abyssinian", "beagle", "pug")  # a folder source's classes (breed names)
SEARCH = [{"C": 0.1, "val_accuracy": 0.4}, {"C": 1.0, "val_accuracy": 0.6}]
METRICS = {
    "feature_extractor": {"val_accuracy": 0.6, "test_accuracy": 0.58, "test_top5": 0.9,
                          "test_macro_f1": 0.55, "test_ece": 0.07, "train_seconds": 2.0},
    "finetune_top": {"val_accuracy": 0.55, "test_accuracy": 0.52, "test_top5": 0.88,
                     "test_macro_f1": 0.5, "test_ece": 0.09, "train_seconds": 9.0},
}  # fmt: skip


def git(project: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")  # fmt: skip
    out = subprocess.run(
        ["git", *args], cwd=project, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def write_params(project: Path, photos: Path | None = None) -> None:
    """The test params; ``photos``: ``data.source: folder`` reading that folder."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if photos is not None:
        raw["data"].update(source="folder", folder=str(photos))
    raw["train"]["strategies"] = STRATEGIES
    raw["model"].update(backbone=BACKBONE, pretrained=False, image_size=INPUT_SIZE)
    raw["decode"]["size"] = DECODE_SIZE
    raw["mlflow"]["experiment"] = EXPERIMENT
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def write_splits(
    project: Path, photos: Path | None = None, per_breed: int = 4, real_photos: Path | None = None
) -> None:
    """Photos and their split CSVs: the official layout under data/raw, or ``photos`` as a
    ``<class>/<image>`` folder (classes named after breeds, so the tiny models' labels fit).

    In the official layout photos 1 and 2 of each breed train, one is a test photo, the others
    validate; ``real_photos``: a folder of real photos named ``<Breed>_<n>.jpg`` whose k-th photo
    of a breed replaces the k-th generated one (the generated one stays where none is left)."""
    if photos is None:
        ds = make_dataset(project / "data" / "raw", per_breed=per_breed, test_per_breed=1,
                          quirks=False)  # fmt: skip
        if real_photos is not None:
            for breed in {image_id.rsplit("_", 1)[0] for image_id in ds.ids}:
                real = sorted(real_photos.glob(f"{breed}_*.jpg"))
                mine = sorted((i for i in ds.ids if i.rsplit("_", 1)[0] == breed),
                              key=lambda i: int(i.rsplit("_", 1)[1]))  # fmt: skip
                for image_id, source in zip(mine, real, strict=False):
                    target = project / "data" / "raw" / "images" / f"{image_id}.jpg"
                    shutil.copyfile(source, target)
        frame = pd.DataFrame(split_rows(ds))
        split = [
            "test"
            if image_id in ds.test
            else ("val" if int(image_id.rsplit("_", 1)[1]) >= 3 else "train")
            for image_id in frame["image_id"]
        ]
    else:
        frame = pd.DataFrame(folder_rows(photos))
        split = ["test" if f.endswith("003.jpg") else ("val" if f.endswith("002.jpg") else "train")
                 for f in frame["file"]]  # fmt: skip
    (project / "data" / "splits").mkdir(parents=True)
    for name, part in frame.groupby(pd.Series(split, index=frame.index, name="split")):
        part.to_csv(project / "data" / "splits" / f"{name}.csv", index=False)


def folder_rows(photos: Path) -> list[dict]:
    """Split-CSV rows of a generated ``<class>/<image>`` folder (the folder source's columns:
    image id and file are the path inside the folder)."""
    import hashlib

    from petsml.data.breeds import species_of

    rows = []
    for path in make_image_folder(photos, FOLDER_CLASSES, per_class=4):
        file = path.relative_to(photos).as_posix()
        breed = path.parent.name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append({"image_id": file, "file": file, "breed": breed,
                     "class_id": BREEDS.index(breed), "species": species_of(breed),
                     "species_id": 0, "sha256": digest})  # fmt: skip
    return rows


def write_index_embeddings(project: Path) -> None:
    """``data/embeddings`` as the evaluate stage leaves it: each model's embeddings of the train
    and validation photos (its similar-photo index rows), from the raw photos as served."""
    from petsml import paths
    from petsml.config import load_params
    from petsml.data.decode import load_rgb
    from petsml.data.sources import photo_path
    from petsml.evaluation.embeddings import write_embeddings
    from petsml.models.classifier import load_classifier
    from petsml.similar.embed import embed

    frame = pd.concat([pd.read_csv(project / paths.split_csv(name)) for name in paths.INDEX_SPLITS])
    data = load_params(project / "params.yaml").data  # where the source keeps its photos
    pixels = np.stack([load_rgb(photo_path(data, f, project), DECODE_SIZE) for f in frame["file"]])
    rows = {}
    for strategy in STRATEGIES:
        model, _ = load_classifier(project / "models" / strategy / "model.pt")
        rows[strategy] = (frame["image_id"].tolist(), embed(model, pixels))
    write_embeddings(project / paths.EMBEDDINGS, rows)


def write_eval_files(folder: Path, strategy: str) -> None:
    folder.mkdir(parents=True)
    pd.DataFrame(
        {"image_id": ["pug_4", "beagle_4"], "label": [25, 4], "pred": [25, 5], "correct": [1, 0]}
    ).to_csv(folder / "predictions.csv", index=False)
    pd.DataFrame({"class": ["pug"], "f1": [0.5]}).to_csv(folder / "per_class.csv", index=False)
    pd.DataFrame({"a": ["pug"], "b": ["beagle"], "n": [1]}).to_csv(
        folder / "confused_pairs.csv", index=False
    )
    for name in ("confusion.png", "misclassified.png", "reliability.png"):
        Image.fromarray(np.full((8, 8, 3), len(strategy) * 7 % 255, np.uint8)).save(folder / name)


def build_project(
    root: Path, photos: Path | None = None, per_breed: int = 4, real_photos: Path | None = None
) -> Path:
    """A project directory as the pipeline leaves it just before the track stage; ``photos``:
    of a ``data.source: folder`` project reading that folder (see :func:`write_splits`)."""
    project = root / "project"
    project.mkdir()
    write_params(project, photos)
    write_splits(project, photos, per_breed, real_photos)
    for index, strategy in enumerate(STRATEGIES):
        model_dir = project / "models" / strategy
        make_tiny_model(model_dir / "model.pt", strategy=strategy, seed=index)
        trained = strategy == "finetune_top"
        (model_dir / "history.json").write_text(
            json.dumps({"epochs": EPOCHS if trained else [], "search": [] if trained else SEARCH})
        )
        summary = {
            "strategy": strategy, "task": "breed", "backbone": BACKBONE,
            "val_accuracy": METRICS[strategy]["val_accuracy"], "train_seconds": 1.0,
            "best_epoch": 2 if trained else None, "epochs_run": 3 if trained else 0,
            "device": "cpu", "params": {"lr": 0.001} if trained else {"C": 1.0},
        }  # fmt: skip
        (model_dir / "summary.json").write_text(json.dumps(summary))
        write_eval_files(project / "reports" / "eval" / strategy, strategy)
    write_index_embeddings(project)
    (project / "reports" / "metrics.json").write_text(json.dumps(METRICS, indent=2))
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(project / "reports/eval/strategies.png")
    validation = project / "reports" / "validation"
    (validation / "data_docs").mkdir(parents=True)
    (validation / "summary.json").write_text(json.dumps({"success": True}))
    (validation / "data_docs" / "index.html").write_text("<html>docs</html>")
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"cmd": "python -m stages.download",
                         "outs": [{"path": "data/raw", "hash": "md5", "md5": RAW_MD5}]},
            "split": {"cmd": "python -m stages.split",
                      "outs": [{"path": "data/splits", "hash": "md5", "md5": SPLITS_MD5}]},
        },
    }  # fmt: skip
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    (project / ".gitignore").write_text("/data/\n/models/\n/reports/\n/mlruns/\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "init")
    return project


def execution(tracking: dict, model_pt: Path, strategies: dict, key: str = "k") -> dict:
    """Log one pipeline execution like the track stage; returns its mlflow_runs.json record.

    ``strategies``: name -> (val_accuracy, predictions DataFrame).
    """
    import mlflow

    from petsml.tracking.pyfunc import log_pyfunc_model

    mlflow.set_tracking_uri(tracking["uri"])
    exp = tracking["experiment_id"]
    tags = {"git_commit": "c0ffee" + key, "dvc_data_hash": "d4t4" + key, "task": "breed"}
    children, model_uris = {}, {}
    with mlflow.start_run(experiment_id=exp, run_name=f"pipeline-{key}", tags=tags) as parent:
        for strategy, (val_acc, preds) in strategies.items():
            child_tags = {**tags, "strategy": strategy, "backbone": BACKBONE}
            with mlflow.start_run(
                experiment_id=exp, run_name=strategy, nested=True, tags=child_tags
            ) as run:
                correct = preds["correct"].astype(bool)
                mlflow.log_metrics(
                    {
                        "val_accuracy": val_acc,
                        "test_accuracy": float(correct.mean()),
                        "test_top5": 1.0,
                        "test_macro_f1": float(correct.mean()),
                        "test_ece": 0.05,
                    }
                )
                mlflow.log_text(preds.to_csv(index=False), "eval/predictions.csv")
                mlflow.log_text(per_class(preds).to_csv(index=False), "eval/per_class.csv")
                mlflow.log_input(mlflow.data.from_pandas(preds, name="test"), context="test")
                info = log_pyfunc_model(model_pt)
            children[strategy] = run.info.run_id
            model_uris[strategy] = info.model_uri
    return {
        "tracking_uri": tracking["uri"],
        "experiment_id": exp,
        "parent_run_id": parent.info.run_id,
        "children": children,
        "model_uris": model_uris,
        "run_key": key,
    }


def per_class(preds: pd.DataFrame) -> pd.DataFrame:
    """Per-class accuracy in the layout of reports/eval/<strategy>/per_class.csv (f1 ~ acc)."""
    grouped = preds.assign(correct=preds["correct"].astype(int)).groupby("label")["correct"]
    frame = grouped.agg(["size", "sum"]).reset_index()
    return pd.DataFrame(
        {
            "class_id": frame["label"],
            "class_name": [BREEDS[i] for i in frame["label"]],
            "support": frame["size"],
            "correct": frame["sum"],
            "accuracy": frame["sum"] / frame["size"],
            "f1": frame["sum"] / frame["size"],
        }
    )


def track_in_own_store(
    root: Path, photos: Path | None = None, per_breed: int = 4, real_photos: Path | None = None
) -> tuple[Path, str, dict]:
    """:func:`build_project` tracked into a SQLite store of its own under ``root``.

    Runs the track stage's library call in this process with the project as the cwd and
    ``MLFLOW_TRACKING_URI`` set, both restored after; writes ``reports/mlflow_runs.json`` as the
    stage does. Returns (project, tracking URI, that record).
    """
    from petsml.config import load_params
    from petsml.io import write_json
    from petsml.tracking.runs import track_pipeline

    project = build_project(root, photos, per_breed, real_photos)
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    (root / "store").mkdir()
    with tracking_from(project, uri):
        record = track_pipeline(load_params(), root=".")
        write_json(project / "reports" / "mlflow_runs.json", record)
    return project, uri, record


@contextmanager
def tracking_from(project: Path, uri: str) -> Iterator[None]:
    """Run as a stage would: ``project`` as the cwd and ``MLFLOW_TRACKING_URI`` = ``uri``; both
    restored afterwards. MLflow's process-wide registry URI (which in-process code may have set)
    is pointed at ``uri`` for the block and put back, so an earlier test in the same worker
    cannot send this block's ``models:/`` lookups to another store."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    old_env, old_cwd = {name: os.environ.get(name) for name in names}, Path.cwd()
    old_registry = registry_utils._registry_uri
    for name in names:
        os.environ[name] = uri
    tracking_utils._tracking_uri, registry_utils._registry_uri = uri, uri
    os.chdir(project)
    try:
        yield
    finally:
        registry_utils._registry_uri = old_registry
        os.chdir(old_cwd)
        for name, value in old_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register_in_own_store(
    root: Path, photos: Path | None = None, per_breed: int = 4, real_photos: Path | None = None
) -> tuple[Path, str, dict]:
    """:func:`track_in_own_store`, then the register stage's call: the best strategy becomes
    version 1 of ``oxford-pets-breed`` (the champion, the registry being empty). Returns
    (project, tracking URI, ``reports/registry.json``)."""
    from petsml.config import load_params
    from petsml.io import write_json
    from petsml.tracking.registration import register_execution

    project, uri, record = track_in_own_store(root, photos, per_breed, real_photos)
    with tracking_from(project, uri):
        params = load_params()
        report = register_execution(
            record, params.registered_model_name, params.registry.max_p_value,
            task=params.data.task,
        )  # fmt: skip
        write_json(project / "reports" / "registry.json", report)
    return project, uri, report


def sweep_member(index: int, uri: str, model_pt: str, root: str, name: str, barrier) -> None:
    """One concurrent sweep member in its own process: wait for the others at ``barrier``, log
    an execution (parent, child, pyfunc model; ``index`` more correct test rows than member 0)
    to ``uri``, register it as ``name`` with the gate; write ``root/member<index>.json``."""
    import numpy as np

    os.environ["MLFLOW_TRACKING_URI"] = uri
    from petsml.tracking import store
    from petsml.tracking.registration import register_execution
    from tests.predictions import N_TEST, predictions_table

    barrier.wait(timeout=300)
    uri = store.configure(root)
    tracking = {"uri": uri, "experiment_id": store.get_or_create_experiment("sweep", uri)}
    correct = np.arange(N_TEST) < 20 + 10 * index
    runs = execution(tracking, Path(model_pt), {"finetune_top": (0.5, predictions_table(correct))},
                     key=f"member{index}")  # fmt: skip
    report = register_execution(runs, name, 0.05)
    Path(root, f"member{index}.json").write_text(json.dumps({"runs": runs, "report": report}))


def run_sweep_members(root: Path, uri: str, name: str, members: int) -> list[int | None]:
    """``members`` :func:`sweep_member` processes on one store at once; their exit codes."""
    import multiprocessing

    model_pt = make_tiny_model(root / "model.pt", strategy="finetune_top")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(members)
    processes = [
        context.Process(target=sweep_member, args=(i, uri, str(model_pt), str(root), name, barrier))
        for i in range(members)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=900)
    return [p.exitcode for p in processes]
