"""The compare stage: the strategies ranked by validation accuracy with what shipping each costs.

One project as the pipeline leaves it before the stage (tiny real models, evaluate's metrics,
a decoded cache, the advice) is compared once, in this process; its report is then read back
as files, through ``pets report``, from a real SQLite MLflow store and from the sweep's table.
The Pareto front, the transfer gain and the advice check also run on hand-made rows whose
answer is known.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from petsml.testing.project import shipped_section
from tests.comparison import ADVICE, compared_project
from tests.edge import HistogramHead
from tests.tracking import METRICS, STRATEGIES, tracking_from, write_params

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    project, report = compared_project(root)
    return root, project, report


def _rows(**val_by_name) -> list[dict]:
    return [{"strategy": s, "val_accuracy": v, "test_accuracy": v} for s, v in val_by_name.items()]


def test_report_ranks_by_validation_with_every_column(compared):
    from petsml.evaluation.results import COLUMN_KEYS, COLUMNS, METRIC_KEYS
    from petsml.models.classifier import load_classifier

    _, project, report = compared
    rows = report["rows"]
    ranked = sorted(STRATEGIES, key=lambda s: -METRICS[s]["val_accuracy"])
    assert [r["strategy"] for r in rows] == ranked
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert set(COLUMN_KEYS) <= set(row)
        # quality and training time are evaluate's numbers, read back, not recomputed
        assert {k: row[k] for k in METRIC_KEYS} == METRICS[row["strategy"]]
        model_pt = project / "models" / row["strategy"] / "model.pt"
        model, _ = load_classifier(model_pt)
        assert row["parameters"] == sum(p.numel() for p in model.parameters())
        assert row["model_mb"] == pytest.approx(model_pt.stat().st_size / 1e6, abs=1e-3)
        assert row["latency_ms_batch1"] > 0 and row["latency_ms_batch16"] > 0
        assert row["transfer_gain"] is None  # scratch did not run
    assert report["device"] == "cpu"
    md = (project / "reports" / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| #"))
    assert [h.strip() for h in header.strip("|").split("|")] == [c.header for c in COLUMNS]
    assert md.index(f"| 1 | {ranked[0]} |") < md.index(f"| 2 | {ranked[1]} |")
    assert "`scratch` did not run" in md
    csv = (project / "reports" / "comparison" / "strategies.csv").read_text().splitlines()
    assert csv[0].startswith("strategy,val_accuracy") and len(csv) == len(rows) + 1


def test_rows_carry_the_onnx_columns_of_a_real_export(compared):
    """Every strategy's tiny model exported (fp32 + int8) in a temp folder and measured."""
    from petsml.evaluation.results import ONNX_COLUMNS, ONNX_KEYS
    from tests.comparison import ONNX_SETTINGS

    _, project, report = compared
    for row in report["rows"]:
        assert row["onnx_fp32_top1_agreement"] == 1.0  # the parity gate passed on test
        assert row["onnx_fp32_mb"] > 0 and row["onnx_int8_mb"] > 0
        assert row["onnx_fp32_p50_ms"] > 0 and row["onnx_int8_p50_ms"] > 0
        assert isinstance(row["int8_accuracy_drop_points"], float)
        assert "notes" not in row
    assert report["onnx"]["measured"] and report["onnx"]["int8"]
    assert report["onnx"]["calibration_photos"] == ONNX_SETTINGS["calibration"]
    md = (project / "reports" / "comparison.md").read_text()
    assert all(f" {c.header} |" in md for c in ONNX_COLUMNS)
    assert report["onnx"]["what"] in md
    best = report["rows"][0]
    assert f"| {best['onnx_fp32_p50_ms']:.2f} |" in md
    assert set(ONNX_KEYS) <= set(report["rows"][0])
    assert not list(project.rglob("*.onnx"))  # the exports are not kept


def _bench_and_runs(project):
    import numpy as np
    import torch

    from petsml.config import load_params
    from petsml.evaluation.comparison import Bench, strategy_runs
    from tests.models import DECODE_SIZE

    runs = strategy_runs(load_params(project / "params.yaml"), project)
    images = np.zeros((64, DECODE_SIZE, DECODE_SIZE, 3), np.uint8)  # latency: batch 1 and 64
    return Bench(torch.device("cpu"), images), runs


def test_onnx_off_leaves_the_cells_empty_and_says_so(compared):
    from petsml.compare_onnx import onnx_columns
    from petsml.evaluation.comparison import build_report
    from petsml.evaluation.comparison_render import markdown

    _, project, _ = compared
    bench, runs = _bench_and_runs(project)
    off = onnx_columns(shipped_section("compare", onnx=False), project)
    assert off.part is None
    report = build_report(runs[:1], bench, None, [off])
    row = report["rows"][0]
    assert row.get("onnx_fp32_mb") is None and row.get("onnx_int8_p50_ms") is None
    assert report["onnx"]["measured"] is False
    assert "`compare.onnx` is false" in markdown(report)


def test_the_compare_params_are_typed_and_checked():
    import yaml

    from petsml.config import ConfigError, parse_params
    from tests.tracking import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert parse_params(raw).compare == shipped_section("compare")
    assert shipped_section("compare").onnx is False  # the default `dvc repro` stays cheap
    shipped = dict(raw["compare"])
    raw["compare"] = {**shipped, "onnx": True, "onnx_int8": True, "calibration": 50}
    assert parse_params(raw).compare.calibration == 50
    raw["compare"] = {**shipped, "onnx": False, "onnx_int8": True}
    with pytest.raises(ConfigError, match=r"compare\.onnx_int8: true needs onnx: true"):
        parse_params(raw)
    raw["compare"] = {**shipped, "calibration": 0}
    with pytest.raises(ConfigError, match=r"compare\.calibration"):
        parse_params(raw)


def test_a_model_that_cannot_be_exported_gets_empty_cells_and_a_note(compared):
    """A head with an operator ONNX opset 17 lacks (histc): the row stays, its ONNX cells are
    empty, and the note names the reason (the fixture's report shows the others measured)."""
    from petsml.compare_onnx import onnx_columns
    from petsml.evaluation.comparison import build_report
    from petsml.evaluation.comparison_render import markdown
    from petsml.evaluation.results import ONNX_KEYS

    _, project, _ = compared
    bench, runs = _bench_and_runs(project)
    broken = runs[0]
    broken.model().head = HistogramHead(broken.model().head)
    extra = onnx_columns(shipped_section("compare", onnx=True, latency_runs=2), project)
    report = build_report([broken], bench, None, [extra])
    (bad,) = report["rows"]
    assert all(bad[k] is None for k in ONNX_KEYS)
    assert bad["latency_ms_batch1"] > 0  # the rest of the row is measured
    (note,) = bad["notes"]
    assert note.startswith("ONNX columns empty: ExportError: this model cannot be exported")
    assert "histc" in note
    md = markdown(report)
    assert f"`{broken.strategy}`: {note}" in md
    assert "int8 columns off" in md


def test_html_report_is_one_offline_file(compared):
    _, project, report = compared
    page = (project / "reports" / "comparison.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "@import" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    for row in report["rows"]:
        assert f">{row['strategy']}<" in page
    assert report["advice"]["statement"].split(":")[0] in page


def test_pareto_front_of_known_points():
    from petsml.evaluation.comparison import pareto_front

    def row(name, acc, ms):
        return {"strategy": name, "val_accuracy": acc, "latency_ms_batch1": ms}

    rows = [
        row("fast_weak", 0.60, 1.0),
        row("slow_strong", 0.90, 10.0),
        row("middle", 0.80, 5.0),
        row("dominated", 0.70, 6.0),  # middle is both faster and more accurate
        row("tie_slower", 0.80, 7.0),  # as accurate as middle, slower
        row("unmeasured", 0.99, None),
    ]
    assert pareto_front(rows) == ["fast_weak", "middle", "slow_strong"]
    assert pareto_front([row("only", 0.5, 2.0)]) == ["only"]
    assert pareto_front([]) == []


def test_transfer_gain_is_over_scratch_only_when_it_ran():
    from petsml.evaluation.comparison import transfer_gain

    rows = _rows(feature_extractor=0.8, scratch=0.3, svm_early=0.25)
    transfer_gain(rows)
    gains = {r["strategy"]: r["transfer_gain"] for r in rows}
    assert gains == {"feature_extractor": pytest.approx(0.5), "scratch": None,
                     "svm_early": pytest.approx(-0.05)}  # fmt: skip
    rows = _rows(feature_extractor=0.8)
    transfer_gain(rows)
    assert rows[0]["transfer_gain"] is None


def test_advice_check_says_matched_or_why_not():
    from petsml.evaluation.advice_verdict import advice_verdict
    from petsml.evaluation.comparison import rank

    ranked = rank(_rows(feature_extractor=0.90, finetune_top=0.93, scratch=0.20))
    won = advice_verdict({"cell": "large+similar", "strategy": "finetune_top"}, ranked)
    assert won["matched"] is True and won["winner"] == "finetune_top"
    assert "3.0 points ahead of feature_extractor" in won["statement"]

    beaten = advice_verdict(ADVICE, ranked)
    assert beaten["matched"] is False and beaten["reason"] == "beaten"
    assert beaten["statement"].startswith("did not match: the advice (small+similar) was "
                                          "feature_extractor, but finetune_top won")  # fmt: skip
    assert "by 3.0 points (0.930 vs 0.900); feature_extractor ranked 2 of 3" in beaten["statement"]

    early = {"cell": "small+unlike", "strategy": "svm_early", "early_block": 4}
    missing = advice_verdict(early, ranked)
    assert missing["matched"] is False and missing["reason"] == "not_run"
    assert "svm_early at block 4, which did not run" in missing["statement"]
    assert "train.strategies" in missing["statement"]

    none = advice_verdict(None, ranked)
    assert none["matched"] is None and "advice.json is missing" in none["statement"]


def test_the_stage_reads_the_advice_it_checks(compared):
    _, project, report = compared
    assert report["advice"]["matched"] is True  # tests.tracking's winner is feature_extractor
    assert report["advice"]["advised"] == ADVICE["strategy"]
    assert "**Advice**: matched" in (project / "reports" / "comparison.md").read_text()


def test_missing_metrics_name_the_file_and_the_fix(tmp_path, monkeypatch):
    from petsml.config import load_params
    from petsml.evaluation.comparison import compare_all
    from petsml.evaluation.results import ResultsError

    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ResultsError, match=r"metrics\.json: missing\. Run `dvc repro evaluate`"):
        compare_all(load_params())
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps(METRICS))
    with pytest.raises(ResultsError, match=r"model\.pt: missing\. Run `dvc repro train@"):
        compare_all(load_params())


def test_pets_report_prints_the_table_or_names_the_missing_file(compared, tmp_path, capsys):
    from petsml.cli import main

    _, project, report = compared
    main(["report", "--params", str(project / "params.yaml")])
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  strategy"))
    assert "ms/img b1" in lines[header] and "gain vs scratch" in lines[header]
    assert [line.split()[1] for line in lines[header + 1 : header + 3]] == [
        r["strategy"] for r in report["rows"]
    ]
    assert f"Advice: {report['advice']['statement']}" in out
    assert "Pareto front (val_accuracy vs latency_ms_batch1)" in out

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--params", str(tmp_path / "params.yaml")])  # the stage's name
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "reports/comparison.json: missing" in err and "`dvc repro`" in err


def test_the_parent_run_logs_the_report_and_its_columns(compared):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    from petsml.config import load_params
    from petsml.tracking.parent_run import log_parent_summary
    from petsml.tracking.run_inputs import collect_strategy_files

    root, project, report = compared
    (root / "store").mkdir()
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    with tracking_from(project, uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("compare", artifact_location=str(root / "art"))
        files = collect_strategy_files(load_params(), ".")
        with mlflow.start_run(experiment_id=experiment) as run:
            log_parent_summary(client, run.info.run_id, files, project)
    run_id = run.info.run_id
    logged = {f.path for f in client.list_artifacts(run_id, "comparison")}
    assert {
        "comparison/comparison.md", "comparison/comparison.html", "comparison/comparison.json",
        "comparison/accuracy_latency.png", "comparison/accuracy_train_time.png",
    } <= logged  # fmt: skip
    uri_of_table = f"runs:/{run_id}/comparison/strategies.json"
    table = json.loads(Path(_download_artifact_from_uri(uri_of_table, str(root))).read_text())
    rows = {r[0]: dict(zip(table["columns"], r, strict=True)) for r in table["data"]}
    for expected in report["rows"]:
        got = rows[expected["strategy"]]
        for key in ("latency_ms_batch1", "latency_ms_batch16", "parameters", "model_mb", "rank"):
            assert got[key] == pytest.approx(expected[key]), key
    note = client.get_run(run_id).data.tags["mlflow.note.content"]
    assert report["advice"]["statement"] in note


def test_the_sweep_table_carries_the_members_comparison_columns(compared):
    from pipelines.sweep import COLUMNS, format_table, member_row

    _, _, report = compared
    strategy = report["rows"][0]["strategy"]
    result = {"metrics": METRICS, "comparison": report}
    row = member_row("m", "bb", strategy, None, result, 1.0)
    for key in ("test_top5", "test_macro_f1", "test_ece", "latency_ms_batch1",
                "latency_ms_batch16", "parameters", "model_mb", "transfer_gain"):  # fmt: skip
        assert key in COLUMNS
        assert row[key] == (
            None if report["rows"][0][key] is None else pytest.approx(report["rows"][0][key])
        ), key
    header = format_table([row]).splitlines()[0]
    assert "latency_ms_batch1" in header and "parameters" in header
    bare = member_row("m", "bb", strategy, None, {"metrics": METRICS}, 1.0)
    assert bare["latency_ms_batch1"] is None  # a member that did not reach compare ...
    assert bare["test_top5"] == METRICS[strategy]["test_top5"]  # ... still has evaluate's


def test_latency_is_per_image_and_bounded_by_its_budget():
    import time
    from types import SimpleNamespace

    import numpy as np
    import torch

    from petsml.evaluation.torch_latency import Timing, seconds_per_image
    from petsml.models.base import Preprocessing

    class Sleepy(torch.nn.Module):
        """20 ms per batch whatever its size, counting its calls."""

        def __init__(self):
            super().__init__()
            self.backbone = SimpleNamespace(preprocessing=Preprocessing(8, (0.5,) * 3, (0.2,) * 3))
            self.calls = 0

        def forward(self, x):
            assert x.shape == (len(x), 3, 8, 8)  # preprocessed: cropped, NCHW float
            self.calls += 1
            time.sleep(0.02)
            return x.mean(dim=(1, 2, 3))

    images = np.zeros((4, 10, 10, 3), np.uint8)
    model = Sleepy()
    per_image = seconds_per_image(model, images, 4, torch.device("cpu"), Timing(2, 3, 60.0))
    assert model.calls == 5  # 2 warm-up + 3 timed
    assert 0.02 / 4 <= per_image < 0.5 / 4
    model = Sleepy()
    seconds_per_image(model, images, 1, torch.device("cpu"), Timing(1, 50, budget_s=0.05))
    assert model.calls < 10  # stopped by the budget, not after 50 timed batches


def test_dvc_plots_show_draws_accuracy_against_latency_and_training_time(compared, tmp_path):
    import shutil
    import subprocess

    from petsml.testing.project import REPO, tool_env

    _, project, report = compared
    work = tmp_path / "repo"
    shutil.copytree(project / "reports" / "comparison", work / "reports" / "comparison")
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(project / "params.yaml", work / "params.yaml")
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, timeout=60)
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    data = json.loads(shown.stdout)["data"]
    for plot_id, x in (("accuracy_vs_latency", "latency_ms_batch1"),
                       ("accuracy_vs_training_time", "train_seconds")):  # fmt: skip
        content = data[plot_id][0]["content"]
        points = content["data"]["values"]
        assert sorted(p["strategy"] for p in points) == sorted(
            r["strategy"] for r in report["rows"]
        )
        assert content["encoding"]["x"]["field"] == x
        assert content["encoding"]["y"]["field"] == "val_accuracy"
