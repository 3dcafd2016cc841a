"""Extending the pipeline touches one place: a strategy is a module and one registry row, a
metric is one registry row (here with its function, as an installed plug-in), and `dvc repro`
then trains, evaluates, compares, tracks and registers with them.

In a temporary copy of this project: a nearest-class-mean strategy added as a new module plus
one row of ``petsml/catalog/strategies.py`` (no params.yaml section: it has no settings), a
toy metric added as a ``petsml.metrics`` entry point, ``train.strategies`` naming the new
strategy, the generated deps rewritten (``make deps``), then one real `dvc repro`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from petsml.testing.fakedata import MirrorServer, make_dataset, pack_archives
from petsml.testing.plugins import NEAREST_MEAN, write_plugin
from petsml.testing.project import dvc, fake_data_params, make_project, tool_env

pytestmark = [pytest.mark.slow(seconds=150), pytest.mark.integration]

TOY_METRIC = """
import numpy as np

from petsml.catalog.metrics import MetricRow


def top1_error(labels, logits, n_bins):
    return float((np.asarray(logits).argmax(axis=1) != np.asarray(labels)).mean())


ROW = MetricRow("test_top1_error", "err", ".3f", "test top-1 error rate", "test",
                "toy_metric:top1_error", higher_is_better=False, tag=True)
"""


def _add_strategy(project: Path) -> None:
    """The strategy's module (its head) and its one row: nothing else is edited."""
    source = NEAREST_MEAN.replace(
        "toy_strategy:nearest_mean", "petsml.training.nearest_mean:nearest_mean"
    )
    module = source.split("\nROW = ")[0]
    (project / "petsml/training/nearest_mean.py").write_text(
        '"""The nearest class mean as a linear head (an example strategy)."""\n' + module
    )
    catalog = project / "petsml/catalog/strategies.py"
    text = catalog.read_text()
    row = (
        '    StrategyRow("nearest_mean", "frozen", "petsml.training.frozen:fit", '
        'head="petsml.training.nearest_mean:nearest_mean", feature="early"),\n'
    )
    marker = ")  # fmt: skip\n\n\n@cache"
    assert marker in text
    catalog.write_text(text.replace(marker, row + marker, 1))


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    root = tmp_path_factory.mktemp("extend")
    make_dataset(root / "src", per_breed=10, test_per_breed=3)
    md5 = pack_archives(root / "src", root / "mirror")
    plugins = write_plugin(root / "site", "toy_metric", TOY_METRIC,
                           {"petsml.metrics": {"test_top1_error": "toy_metric:ROW"}})  # fmt: skip
    env = tool_env(PYTHONPATH=str(plugins), MLFLOW_TRACKING_URI="")
    env.pop("MLFLOW_TRACKING_URI")
    with MirrorServer(root / "mirror") as server:
        overrides = fake_data_params(server.url, md5) | {
            "model.image_size": 64,
            "train.strategies": ["nearest_mean"],
        }
        project = make_project(root / "p", overrides)
        _add_strategy(project)
        subprocess.run([sys.executable, "-m", "tools.stage_deps"], cwd=project, env=env,
                       check=True, capture_output=True)  # fmt: skip
        first = dvc(project, "repro", env=env, timeout=900)
    return project, env, first


def test_the_new_strategy_runs_through_every_stage(extended):
    project, env, first = extended
    ran = {line.split("'")[1] for line in first.stdout.splitlines() if "Running stage" in line}
    assert {"train@nearest_mean", "evaluate", "compare", "track", "register"} <= ran
    assert json.loads((project / "data/strategies/nearest_mean.json").read_text()) == {}
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert set(metrics) == {"nearest_mean"} and metrics["nearest_mean"]["test_accuracy"] > 0.5
    rows = json.loads((project / "reports/comparison.json").read_text())["rows"]
    assert [row["strategy"] for row in rows] == ["nearest_mean"]
    registry = json.loads((project / "reports/registry.json").read_text())
    assert registry["strategy"] == "nearest_mean" and "champion" in registry["aliases"]
    # its module is a code dep of train: editing it re-runs the strategy
    lock = (project / "dvc.lock").read_text()
    assert "petsml/training/nearest_mean.py" in lock


def test_the_new_metric_reaches_comparison_mlflow_and_the_registry(extended):
    from mlflow import MlflowClient

    project, env, _ = extended
    metrics = json.loads((project / "reports/metrics.json").read_text())["nearest_mean"]
    error = metrics["test_top1_error"]
    assert error == pytest.approx(1 - metrics["test_accuracy"])
    (row,) = json.loads((project / "reports/comparison.json").read_text())["rows"]
    assert row["test_top1_error"] == pytest.approx(error)
    assert "test top-1 error rate" in (project / "reports/comparison.md").read_text()
    runs = json.loads((project / "reports/mlflow_runs.json").read_text())
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    child = client.get_run(runs["children"]["nearest_mean"])
    assert child.data.metrics["test_top1_error"] == pytest.approx(error)
    registry = json.loads((project / "reports/registry.json").read_text())
    version = client.get_model_version(registry["model_name"], registry["version"])
    assert float(version.tags["test_top1_error"]) == pytest.approx(error)
    # and the web page's versions table has its column (the page draws what the server lists)
    columns = subprocess.run(
        [sys.executable, "-c", "from petsml.web.registry_view import VERSION_COLUMNS as c; "
         "print(' '.join(c))"], cwd=project, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert "test_top1_error" in columns and columns[-1] == "gate"
