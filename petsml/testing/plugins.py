"""An "installed" plug-in package in a folder: a module and a ``.dist-info`` declaring its
entry points, which :mod:`importlib.metadata` finds once the folder is on ``sys.path`` (or on
``PYTHONPATH`` for the stages ``dvc repro`` starts) - what ``pip install`` would leave."""

from __future__ import annotations

from pathlib import Path

# A frozen strategy in one module and one row: the nearest class mean, as a linear head.
NEAREST_MEAN = '''
import numpy as np

from petsml.catalog.strategies import StrategyRow
from petsml.models.heads import HeadFit


def nearest_mean(x_train, y_train, x_val, y_val, Cs):
    """Each class's mean feature; the nearest mean wins (argmax of 2 m.x - |m|^2)."""
    x_train = np.asarray(x_train, dtype=np.float64)
    k = int(max(y_train.max(), y_val.max())) + 1
    means = np.zeros((k, x_train.shape[1]))
    seen = np.unique(y_train)
    for label in seen:
        means[label] = x_train[y_train == label].mean(axis=0)
    W = 2 * means
    b = np.where(np.isin(np.arange(k), seen), -(means**2).sum(axis=1), -1e4)
    accuracy = float(((np.asarray(x_val) @ W.T + b).argmax(axis=1) == y_val).mean())
    return HeadFit(W, b, 0.0, accuracy, [], 0.0)


ROW = StrategyRow(
    "nearest_mean", "frozen", "petsml.training.frozen:fit",
    head="toy_strategy:nearest_mean", feature="early",
)
'''


def write_plugin(folder: Path, module: str, source: str, entry_points: dict[str, dict]) -> Path:
    """``folder/<module>.py`` with ``source`` and a dist-info declaring ``entry_points``
    (``{group: {name: "module:attribute"}}``); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    lines = []
    for group, entries in entry_points.items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return folder
