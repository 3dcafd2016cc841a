"""The model card attached to every registered version (run artifact + version description).

:func:`build_model_card` is a pure function of :class:`CardInputs`; :func:`gather_card_inputs`
collects those from the MLflow runs of one pipeline execution (and, for split sizes and
per-class scores the runs do not carry, from the project's files).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from petsml import paths
from petsml.catalog import metrics as metrics_catalog

log = logging.getLogger(__name__)

PER_CLASS_NAME = "per_class.csv"
CONFUSED_PAIRS_NAME = "confused_pairs.csv"
# the metrics registry's card rows: (key, column title)
TABLE_METRICS = tuple((row.key, row.header) for row in metrics_catalog.rows() if row.tag)
_NAME_COLUMNS = ("class_name", "class", "breed", "name", "label_name", "label", "species")
_SCORE_COLUMNS = ("f1", "recall", "accuracy", "precision")


@dataclass
class CardInputs:
    model_name: str
    version: str
    task: str
    strategy: str  # the registered (best-by-validation) strategy
    run_id: str
    metrics: dict[str, dict[str, float]]  # strategy -> metric -> value (all strategies)
    backbone: str | None = None
    git_commit: str | None = None
    dvc_data_hash: str | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    per_class: pd.DataFrame | None = None
    confused_pairs: pd.DataFrame | None = None
    limits: dict[str, int] | None = None  # params.yaml serve: what the logged model refuses
    weak_k: int = 5


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def weak_spots(per_class: pd.DataFrame, k: int = 5) -> pd.DataFrame | None:
    """The ``k`` classes with the lowest score (f1, else recall, accuracy, precision)."""
    columns = {c.lower(): c for c in per_class.columns}
    name = next((columns[c] for c in _NAME_COLUMNS if c in columns), None)
    score = next((columns[c] for c in _SCORE_COLUMNS if c in columns), None)
    if name is None or score is None or per_class.empty:
        return None
    keep = [name, score] + [
        columns[c] for c in (*_SCORE_COLUMNS, "support") if c in columns and columns[c] != score
    ]
    frame = per_class[keep].copy()
    frame[score] = pd.to_numeric(frame[score], errors="coerce")
    if "support" in columns:  # a class with no test images has no score worth reporting
        frame = frame[pd.to_numeric(per_class[columns["support"]], errors="coerce") > 0]
    return frame.dropna(subset=[score]).sort_values([score, name]).head(k)


def top_confusions(pairs: pd.DataFrame, k: int = 5) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) of the most frequent mistakes in ``confused_pairs.csv``."""
    needed = {"actual_name", "predicted_name", "count"}
    if pairs is None or not needed <= set(pairs.columns):
        return []
    frame = pairs[pairs["count"] > 0].sort_values(
        ["count", "actual_name", "predicted_name"], ascending=[False, True, True]
    )
    top = frame.head(k)
    return [
        (str(actual), str(predicted), int(count))
        for actual, predicted, count in zip(
            top["actual_name"], top["predicted_name"], top["count"], strict=True
        )
    ]


def _serving_lines(limits: Mapping[str, int] | None) -> list[str]:
    """The served input contract, with the limits the model was logged with (params.yaml
    ``serve``, stored as its model_config)."""
    over = (
        f"An image over {limits['max_pixels']:,} pixels or {limits['max_bytes']:,} bytes "
        if limits
        else "An image over the limits "
    )
    return [
        "- Served (`mlflow models serve`): send the image bytes base64-encoded in a column "
        "`image` or `image_b64`; the server reads no files, so a file path is refused. "
        f"{over}(model_config `max_pixels`, `max_bytes`) is refused in its own row, before "
        "decoding.",
    ]


def build_model_card(inputs: CardInputs) -> str:
    """Markdown: identity, data, metrics of every strategy, weak spots, intended use, limits."""
    sections = (_identity, _data, _metrics, _weak_spots, _use_and_limits)
    return "\n".join(line for section in sections for line in section(inputs))


def _identity(inputs: CardInputs) -> list[str]:
    n_classes = {"breed": "37 breeds", "species": "2 species (cat, dog)"}.get(inputs.task, "")
    return [
        f"# Model card: {inputs.model_name} version {inputs.version}",
        "",
        f"Oxford-IIIT Pet {inputs.task} classifier ({n_classes}): transfer strategy "
        f"`{inputs.strategy}` on the `{inputs.backbone or 'unknown'}` backbone.",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| registered model | `{inputs.model_name}` version {inputs.version} |",
        f"| task | {inputs.task} |",
        f"| strategy | {inputs.strategy} |",
        f"| backbone | {_fmt(inputs.backbone)} |",
        f"| MLflow run | `{inputs.run_id}` |",
        f"| git commit | `{_fmt(inputs.git_commit)}` |",
        f"| DVC data hash | `{_fmt(inputs.dvc_data_hash)}` |",
        "",
    ]


def _data(inputs: CardInputs) -> list[str]:
    lines = [
        "## Data",
        "",
        "Oxford-IIIT Pet (Parkhi et al., 2012): photos of 37 cat and dog breeds, about 200 per "
        "breed, with varied pose, lighting and background. The test split is the dataset's "
        "official test list; validation is a stratified fraction of the official trainval list "
        "(`split.val_fraction`); undecodable files are quarantined by the validate stage.",
        "",
    ]
    if inputs.split_sizes:
        lines += ["| split | images |", "| --- | --- |"]
        lines += [f"| {name} | {count} |" for name, count in inputs.split_sizes.items()]
        lines.append("")
    return lines


def _metrics(inputs: CardInputs) -> list[str]:
    lines = [
        "## Metrics",
        "",
        "All strategies of this pipeline execution on the same splits. The registered model "
        "is the one with the best **validation** accuracy; test metrics were not used to "
        "choose it.",
        "",
        "| strategy | " + " | ".join(title for _, title in TABLE_METRICS) + " |",
        "| --- |" + " --- |" * len(TABLE_METRICS),
    ]
    for strategy in sorted(inputs.metrics):
        values = inputs.metrics[strategy]
        mark = f"**{strategy}** (registered)" if strategy == inputs.strategy else strategy
        cells = " | ".join(_fmt(values.get(key)) for key, _ in TABLE_METRICS)
        lines.append(f"| {mark} | {cells} |")
    return lines


def _weak_spots(inputs: CardInputs) -> list[str]:
    lines = ["", "## Weak spots", ""]
    weak = None if inputs.per_class is None else weak_spots(inputs.per_class, inputs.weak_k)
    if weak is None or weak.empty:
        lines.append("Per-class scores were not available for this model.")
    else:
        lines.append(f"The {len(weak)} classes with the lowest test scores:")
        lines.append("")
        lines.append("| " + " | ".join(str(c) for c in weak.columns) + " |")
        lines.append("|" + " --- |" * len(weak.columns))
        for row in weak.itertuples(index=False):
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    pairs = inputs.confused_pairs
    confusions = [] if pairs is None else top_confusions(pairs, inputs.weak_k)
    if confusions:
        lines += ["", "Most frequent test mistakes (actual -> predicted, count):", ""]
        lines += [f"- {actual} -> {predicted}: {count}" for actual, predicted, count in confusions]
    return lines


def _use_and_limits(inputs: CardInputs) -> list[str]:
    return [
        "",
        "## Intended use",
        "",
        "- Recognising the breed (or species) of a single cat or dog that fills most of a "
        "photo, for demos, teaching and pet-photo organisation.",
        "- Input: an RGB photo (JPEG/PNG); it is resized on its short side and centre-cropped, "
        "as in training. Output: label, probability, top-5 labels and the species.",
        *_serving_lines(inputs.limits),
        "",
        "## Limits",
        "",
        "- Knows only the 37 Oxford-IIIT Pet breeds: any other animal, a mixed breed or a "
        "photo without a pet still gets one of these labels. Use the probability as a "
        "confidence signal, not as a guarantee (see the ECE column for calibration).",
        "- Trained on a few thousand web photos; lookalike breeds (e.g. terriers, the "
        "Staffordshire / American pit bull pair) are confused most (see Weak spots).",
        "- Several pets in one photo, heavy occlusion, drawings or unusual crops are out of "
        "distribution. Not for decisions about animals' health, ownership or pedigree.",
        "",
    ]


# --------------------------------------------------------------------------- gathering


def _artifact_paths(client, run_id: str, path: str = "", depth: int = 3) -> list[str]:
    try:
        items = client.list_artifacts(run_id, path or None)
    except Exception:  # no artifact store reachable: the card just omits what is missing
        return []
    found = []
    for item in items:
        if item.is_dir and depth > 0:
            found += _artifact_paths(client, run_id, item.path, depth - 1)
        elif not item.is_dir:
            found.append(item.path)
    return found


def _eval_table(
    client, run_id: str, artifacts: list[str], name: str, strategy: str, root: Path
) -> pd.DataFrame | None:
    """``name`` (e.g. per_class.csv) from the run's artifacts, else from ``reports/``."""
    for artifact in sorted((p for p in artifacts if p.endswith(name)), key=len):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return pd.read_csv(client.download_artifacts(run_id, artifact, tmp))
            except Exception as error:
                log.warning("cannot read %s of run %s: %s", artifact, run_id, error)
    for local in (root / paths.eval_dir(strategy) / name, root / paths.REPORTS / strategy / name):
        if local.is_file():
            return pd.read_csv(local)
    return None


_CONTEXT_SPLIT = {"training": "train", "validation": "val", "test": "test"}


def _dataset_sizes(run) -> dict[str, int]:
    """Rows per split from the run's dataset inputs (the track stage logs each split CSV)."""
    sizes: dict[str, int] = {}
    inputs = run.inputs.dataset_inputs if run.inputs else []
    for item in inputs or []:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), None)
        split = _CONTEXT_SPLIT.get(context or "")
        try:
            rows = json.loads(item.dataset.profile or "{}").get("num_rows")
        except ValueError:
            rows = None
        if split and rows is not None:
            sizes[split] = int(rows)
    return sizes


def _split_sizes(client, run_id: str, root: Path) -> dict[str, int]:
    """Images per split: the run's dataset inputs, else the local ``data/splits`` CSVs."""
    try:
        sizes = _dataset_sizes(client.get_run(run_id))
    except Exception as error:  # an old run without inputs: fall back to the files
        log.warning("run %s: cannot read dataset inputs: %s", run_id, error)
        sizes = {}
    for split in ("train", "val", "test"):
        csv = root / "data" / "splits" / f"{split}.csv"
        if split not in sizes and csv.is_file():
            sizes[split] = int(len(pd.read_csv(csv, usecols=[0])))
    return {split: sizes[split] for split in ("train", "val", "test") if split in sizes}


def gather_card_inputs(
    client,
    runs: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]],
    strategy: str,
    model_name: str,
    version: str,
    project_root: str | Path = ".",
) -> CardInputs:
    """Collect what the card shows for the registered ``strategy`` of this execution."""
    root = Path(project_root)
    run_id = runs["children"][strategy]
    tags = client.get_run(run_id).data.tags
    artifacts = _artifact_paths(client, run_id)
    return CardInputs(
        model_name=model_name,
        version=str(version),
        task=tags.get("task") or model_name.rsplit("-", 1)[-1],
        strategy=strategy,
        run_id=run_id,
        metrics={s: dict(m) for s, m in metrics.items()},
        backbone=tags.get("backbone"),
        git_commit=tags.get("git_commit"),
        dvc_data_hash=tags.get("dvc_data_hash"),
        split_sizes=_split_sizes(client, run_id, root),
        per_class=_eval_table(client, run_id, artifacts, PER_CLASS_NAME, strategy, root),
        confused_pairs=_eval_table(client, run_id, artifacts, CONFUSED_PAIRS_NAME, strategy, root),
        limits=_serve_limits(root),
    )


def _serve_limits(root: Path) -> dict[str, int] | None:
    """params.yaml ``serve`` of the project (what track logged each model with)."""
    from petsml.config import DEFAULT_PARAMS, load_params

    path = root / DEFAULT_PARAMS
    if not path.is_file():
        return None
    serve = load_params(path).serve
    return {"max_pixels": serve.max_pixels, "max_bytes": serve.max_bytes}
