"""``pets export``: a registered model to ONNX (+ int8), its contract, parity, lineage, bad input.

One registered tiny project (a real SQLite MLflow store, a decoded cache of generated
photos) is exported once through the CLI; the other tests read that export or hit the
bad inputs, each of which must leave no folder behind.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from petsml.export.contract import CONTRACT_FILE, load_image, read_contract
from petsml.export.measure import FP32_FILE, INT8_FILE, REPORT_FILE
from tests.edge import HistogramHead, decode_project, mlflow_uris_restored
from tests.tracking import build_project, tracking_from

pytestmark = pytest.mark.integration

NAME = "oxford-pets-breed"
STRATEGY = "feature_extractor"
EXPORT_UMASK = 0o022
RUNS = ["--runs", "3", "--threads", "1"]  # the timings are not under test, only present


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """A project (splits, generated photos, decoded cache, tiny model folders) whose
    feature_extractor model is ``NAME`` v1 @champion in a SQLite store of its own, registered
    from its run as the register stage does (tag ``run_id``)."""
    import mlflow

    from petsml.tracking import store
    from petsml.tracking.model_registry import ModelRegistry
    from petsml.tracking.pyfunc import log_pyfunc_model

    root = tmp_path_factory.mktemp("export")
    project = build_project(root)
    decode_project(project)
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    with mlflow_uris_restored(), tracking_from(project, uri):
        store.configure(".")
        experiment = store.get_or_create_experiment("pets-export-test", uri)
        with mlflow.start_run(experiment_id=experiment) as run:
            info = log_pyfunc_model(project / "models" / STRATEGY / "model.pt")
        registry = ModelRegistry(NAME, uri)
        version = registry.register(info.model_uri, run.info.run_id, {"strategy": STRATEGY})
        registry.promote(version.version, "export test")
    return {"project": project, "uri": uri, "root": root, "strategy": STRATEGY}


def _pets(registered: dict, capsys, *argv: str) -> tuple[int, str, str]:
    from petsml.cli import main

    with mlflow_uris_restored(), tracking_from(registered["project"], registered["uri"]):
        try:
            main(["export", *argv, "--tracking-uri", registered["uri"], *RUNS])
            code = 0
        except SystemExit as done:
            code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def exported(registered, tmp_path_factory) -> dict:
    """``pets export champion --format onnx --int8 --out ...`` run once; its folder and output."""
    from petsml.cli import main

    out = tmp_path_factory.mktemp("edge") / "champion"
    printed = io.StringIO()  # module fixtures cannot take capsys
    umask = os.umask(EXPORT_UMASK)  # the usual one, whatever the test runner has
    try:
        with (
            mlflow_uris_restored(),
            tracking_from(registered["project"], registered["uri"]),
            redirect_stdout(printed),
        ):
            main(["export", "champion", "--format", "onnx", "--int8", "--out", str(out),
                  "--tracking-uri", registered["uri"], *RUNS])  # fmt: skip
    finally:
        os.umask(umask)
    report = json.loads((out / REPORT_FILE).read_text())
    return {"out": out, "report": report, "printed": printed.getvalue()}


def test_champion_exports_to_onnx_and_int8_that_match_pytorch_and_is_logged_with_lineage(
    registered, exported
):
    from mlflow import MlflowClient

    from petsml.export.onnx_export import session
    from petsml.models.classifier import load_classifier

    out, report = exported["out"], exported["report"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [FP32_FILE, INT8_FILE, CONTRACT_FILE, REPORT_FILE]
    )
    fp32 = report["parity"]["onnx_fp32"]
    assert fp32["n"] == 4 and fp32["top1_agreement"] == 1.0  # the generated test split
    assert fp32["max_abs_logit_diff"] < 1e-4
    int8 = report["parity"]["onnx_int8"]
    assert isinstance(int8["accuracy_drop_points"], float) and int8["calibration_photos"] > 0
    assert [(r["model"], r["precision"]) for r in report["table"]] == [
        ("pytorch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")
    ]  # fmt: skip
    assert all(r["p50_ms"] > 0 and r["bytes"] > 0 for r in report["table"])
    assert report["table"][2]["bytes"] < report["table"][1]["bytes"]  # int8 weights are smaller
    assert report["machine"]["threads"] == 1 and report["opset"] == 17
    printed = exported["printed"]
    assert f"{NAME} v1 (@champion) -> {out}/" in printed
    assert "ONNX fp32 top-1 agreement 100.00%" in printed and "accuracy drop" in printed
    for row in ("pytorch fp32", "onnx fp32", "onnx int8"):
        assert f"  {row}" in printed

    # serving from the folder alone: a photo file through the written contract into ONNX
    # Runtime gives the PyTorch model's logits
    project = registered["project"]
    model, _ = load_classifier(project / "models" / registered["strategy"] / "model.pt")
    contract = read_contract(out)
    photo = next((project / "data" / "raw" / "images").glob("*.jpg"))
    x = load_image(photo, contract)
    got = session(out / FP32_FILE).run(None, {contract.input_name: x})[0]
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert contract.class_names[0] == "Abyssinian" and contract.channel_order == "RGB"

    # lineage: the version points at the export run, the run back at the version
    client = MlflowClient(registered["uri"], registered["uri"])
    version = client.get_model_version(NAME, "1")
    run_id = version.tags["edge.onnx.run_id"]
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["source.model_name"] == NAME and tags["source.model_version"] == "1"
    assert tags["source.alias"] == "champion" and tags["source.run_id"] == version.tags["run_id"]
    assert tags["strategy"] == registered["strategy"] and tags["onnx.int8"] == "True"
    assert run.info.experiment_id == client.get_run(version.tags["run_id"]).info.experiment_id
    logged = {f.path for f in client.list_artifacts(run_id, "onnx")}
    assert {f"onnx/{n}" for n in (FP32_FILE, INT8_FILE, CONTRACT_FILE, REPORT_FILE)} <= logged
    assert run.data.metrics["fp32_top1_agreement"] == 1.0
    assert version.tags["edge.onnx.artifacts"] == f"runs:/{run_id}/onnx"


def test_parity_check_catches_a_wrong_preprocessing_contract(registered, exported):
    from petsml.export.measure import load_data
    from petsml.export.onnx_export import session
    from petsml.export.parity import ParityError, agreement, check_fp32, onnx_logits, torch_logits
    from petsml.models.classifier import load_classifier

    project = registered["project"]
    model, _ = load_classifier(project / "models" / registered["strategy"] / "model.pt")
    contract = read_contract(exported["out"])
    data = load_data(contract, project / "data" / "decoded", project / "data" / "splits")
    images = np.concatenate([data.test_u8, data.calibration_u8])  # more photos, same check
    reference = torch_logits(model, images)
    graph = session(exported["out"] / FP32_FILE)
    check_fp32(agreement(reference, onnx_logits(graph, images, contract)), reference)  # passes
    wrong = {
        "channel order": dataclasses.replace(contract, channel_order="BGR"),
        "normalisation": dataclasses.replace(contract, mean=(0.5, 0.5, 0.5), std=(0.5,) * 3),
    }
    for what, bad in wrong.items():
        with pytest.raises(ParityError, match="does not match the PyTorch model"):
            check_fp32(agreement(reference, onnx_logits(graph, images, bad)), reference)
        print(what, "caught")


def test_an_early_block_model_folder_exports_for_the_comparison_report(registered, tmp_path):
    """``export_and_measure(model_dir)`` on an early-block folder (svm_early's kind; the
    penultimate kind is the champion above), without int8: the columns a comparison report adds
    per strategy."""
    from petsml.export.measure import export_and_measure, table_columns
    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier
    from petsml.models.model_dir import ModelMeta, Summary, read_model_dir, write_model_dir
    from tests.models import BACKBONE, INPUT_SIZE

    project = registered["project"]
    source = read_model_dir(project / "models" / STRATEGY)
    backbone = create_backbone(BACKBONE, pretrained=False, early_block=-3, image_size=INPUT_SIZE)
    early = Classifier(backbone, 37, feature="early")
    kept = ("task", "class_names", "decode_size", "backbone")
    meta = ModelMeta(**{k: source.spec[k] for k in kept}, strategy="svm_early")
    summary = Summary(**{**source.summary, "strategy": "svm_early"})
    write_model_dir(tmp_path / "svm_early", early.eval(), meta, summary=summary)
    report = export_and_measure(
        tmp_path / "svm_early",
        tmp_path / "svm_early-onnx",
        int8=False,
        latency_runs=3,
        decoded_dir=project / "data/decoded",
        splits_dir=project / "data/splits",
    )
    columns = table_columns(report)
    assert columns["onnx_fp32_top1_agreement"] == 1.0
    assert columns["onnx_fp32_mb"] > 0 and columns["pytorch_fp32_p50_ms"] > 0
    assert "onnx_int8_mb" not in columns
    assert report["source"]["strategy"] == "svm_early"
    assert report["source"]["feature"] == "early"


def test_a_flip_tta_model_exports_with_the_flip_inside_the_graph(registered, tmp_path):
    """A model saved with ``tta: flip`` and loaded back exports at opset 17 and passes the fp32
    parity check, and the graph answers like the flip model, not like its weights without TTA."""
    from petsml.export.contract import Contract
    from petsml.export.measure import load_data
    from petsml.export.onnx_export import OPSET, export_onnx, session
    from petsml.export.parity import agreement, check_fp32, onnx_logits, torch_logits
    from petsml.models.classifier import load_classifier, save_classifier

    project = registered["project"]
    model, spec = load_classifier(project / "models" / STRATEGY / "model.pt")
    data = load_data(Contract.for_model(spec), project / "data/decoded", project / "data/splits")
    plain = torch_logits(model, data.test_u8)
    model.tta = "flip"
    save_classifier(model, tmp_path / "model.pt", {k: v for k, v in spec.items() if k != "tta"})
    model, spec = load_classifier(tmp_path / "model.pt")
    contract = Contract.for_model(spec)
    assert model.tta == "flip" and contract.extra["tta"] == "flip" and OPSET == 17
    graph = onnx_logits(session(export_onnx(model, tmp_path / "model.onnx", contract)),
                        data.test_u8, contract)  # fmt: skip
    reference = torch_logits(model, data.test_u8)
    check_fp32(agreement(reference, graph, data.test_labels), reference)  # the export's parity
    assert np.abs(graph - plain).max() > 1e-3  # the mirror view is in the graph


def test_the_edge_benchmark_measures_a_project_s_model_folders(registered):
    """``benchmarks/edge.py`` (docs/BENCHMARKS.md's table) still runs: one strategy, no int8,
    2 calls."""
    from petsml.testing.project import REPO, run

    project = registered["project"]
    done = run(REPO, sys.executable, str(REPO / "benchmarks" / "edge.py"), str(project),
               "-s", "finetune_top", "--runs", "2", "--no-int8", "--threads", "1")  # fmt: skip
    out = done.stdout
    assert "== finetune_top (backbone test_efficientnet)" in out
    assert "| test_efficientnet | finetune_top | pytorch | fp32 |" in out
    assert "| test_efficientnet | finetune_top | onnx | fp32 |" in out and "1 threads" in out
    assert "finetune_top: fp32 agreement 1.0000" in out


@pytest.mark.parametrize(
    ("ref", "out_kind", "message"),
    [
        ("nope", "new", "has no version or alias 'nope'"),
        ("7", "new", f"{NAME} has no version 7"),
        ("champion", "file", "is a file, not a folder"),
        ("champion", "full", "holds files but no earlier export"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(registered, tmp_path, capsys, ref, out_kind,
                                               message):  # fmt: skip
    out = tmp_path / "out"
    if out_kind == "file":
        out.write_text("not a folder")
    elif out_kind == "full":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _pets(registered, capsys, ref, "--out", str(out))
    assert code == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if out_kind == "full":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_model_that_cannot_be_exported_is_named_and_leaves_no_folder(registered, tmp_path):
    """A head with an operator ONNX opset 17 lacks (histc): a clear error, no half export."""
    from petsml.export.measure import export_model, load_data, load_model
    from petsml.export.onnx_export import ExportError

    project = registered["project"]
    model, spec, _ = load_model(project / "models" / "feature_extractor")
    model.head = HistogramHead(model.head)
    from petsml.export.contract import Contract

    data = load_data(Contract.for_model(spec), project / "data/decoded", project / "data/splits")
    with pytest.raises(ExportError, match="cannot be exported to ONNX opset 17.*histc"):
        export_model(model, spec, tmp_path / "out", data)
    assert list(tmp_path.iterdir()) == []


def test_an_export_is_readable_by_others_as_the_umask_allows(exported):
    """Folders 0777 and files 0666 less the umask, like any file the user writes: an export is
    copied to devices and served (tempfile's 0700/0600 kept it to its owner)."""
    out = exported["out"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~EXPORT_UMASK, oct(out.stat().st_mode)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~EXPORT_UMASK, (
            path,
            oct(path.stat().st_mode),
        )


@pytest.mark.parametrize("where", ["/proc/edge", "a-file/sub"])
def test_an_out_folder_that_cannot_be_created_is_named_at_once(tmp_path, where):
    """Checked before the registry is even opened: the store here does not exist, so any later
    check would fail on the model instead; one line naming --out, no traceback."""
    from petsml.testing.project import tool_env

    (tmp_path / "a-file").write_text("a file where a folder should be")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "petsml.cli", "export", "champion", "--out", where,
         "--tracking-uri", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"],
        cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"--out {where} cannot be created" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
