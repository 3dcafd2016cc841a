"""The validate stage on a generated dataset, with real Great Expectations (no mocks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from petsml.config import ValidateParams
from petsml.data.breeds import breed_of
from petsml.data.manifest import build_manifest, read_manifest
from petsml.data.validation import QUARANTINE_COLUMNS, DataValidationError, validate_manifest
from petsml.io import read_json
from petsml.testing.fakedata import make_dataset
from petsml.testing.project import shipped_section

pytestmark = [pytest.mark.slow(seconds=40), pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
PER_BREED = 8
# Sized for the fake dataset: 4 breeds of 8 listed images, some of them quarantined.
PASSING = shipped_section(
    "validate", require_all_breeds=False, min_images_per_breed=1, max_images_per_breed=50
)
SPLITS = ("train", "val", "test")
QUIRK_KIND = {"png_rgba": "PNG/RGBA", "gif": "GIF/P", "cmyk": "JPEG/CMYK", "grey": "JPEG/L"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    ds = make_dataset(root, per_breed=PER_BREED, test_per_breed=3)
    manifest = build_manifest(root, workers=2)
    manifest.to_csv(root / "manifest.csv", index=False)
    # The stage reads the CSV back: validate exactly what it will see.
    return ds, read_manifest(root / "manifest.csv")


@pytest.fixture(scope="module")
def passing_run(dataset, tmp_path_factory):
    """One validation of the untouched fake dataset, shared by the tests that read its outputs."""
    _, manifest = dataset
    work = tmp_path_factory.mktemp("run")
    out, quarantine = work / "reports/validation", work / "data/quarantine.csv"
    summary = validate_manifest(manifest, PASSING, out, quarantine)
    return summary, work, out, quarantine


def _run(manifest: pd.DataFrame, tmp_path: Path, params: ValidateParams = PASSING):
    out, quarantine = tmp_path / "reports/validation", tmp_path / "data/quarantine.csv"
    return validate_manifest(manifest, params, out, quarantine), out, quarantine


def _usable(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest.listed & manifest.exists & manifest.decodable]


def test_fake_dataset_passes_with_outputs_and_no_gx_state(passing_run):
    summary, work, out, quarantine = passing_run
    assert summary.success
    assert (out / "data_docs/index.html").is_file()
    assert list((out / "data_docs/validations").rglob("*.html"))
    on_disk = read_json(out / "summary.json")
    assert on_disk["success"] is True and on_disk["failed"] == []
    assert on_disk["data_docs"] == "data_docs/index.html"
    names = {e["name"] for e in on_disk["expectations"]}
    assert {"class_id_matches_breed", "sha256_unique", "images_per_breed_in_range"} <= names
    assert all(e["success"] for e in on_disk["expectations"] if e["severity"] == "critical")
    assert read_json(out / "gx_results.json")  # the raw GX validation results
    # Only our outputs: no gx/ folder, no leftover temp directories from atomic writes.
    assert sorted(p.name for p in work.iterdir()) == ["data", "reports"]
    assert sorted(p.name for p in out.iterdir()) == ["data_docs", "gx_results.json", "summary.json"]
    assert sorted(p.name for p in quarantine.parent.iterdir()) == ["quarantine.csv"]


def test_quarantine_names_exactly_the_planted_files(dataset, passing_run):
    ds, _ = dataset
    summary, _, _, quarantine_csv = passing_run
    table = pd.read_csv(quarantine_csv, keep_default_na=False)
    assert list(table.columns) == QUARANTINE_COLUMNS
    expected = (
        {name: "undecodable" for name in ds.undecodable}
        | {name: "not_an_image" for name in ds.stray}
        | {f"{image_id}.jpg": "missing" for image_id in ds.missing}
    )
    assert dict(zip(table.file.map(lambda f: Path(f).name), table.reason, strict=True)) == expected
    assert len(table) == len(expected)
    assert (table.detail != "").all()
    assert summary.counts["quarantined"] == {
        "undecodable": 2, "not_an_image": 1, "missing": 1, "too_small": 0, "too_large": 0,
        "nested_folder": 0,
    }  # fmt: skip
    assert summary.counts["quarantined_total"] == 4
    # Quarantined rows are reported by the non-fatal file checks, not as hard failures.
    checks = {e["name"]: e for e in summary.expectations}
    assert checks["file_decodable"]["severity"] == "warning"
    assert not checks["file_decodable"]["success"]
    assert checks["file_decodable"]["unexpected_count"] == 4


def test_converted_and_unlisted_files_are_counted_not_quarantined(dataset, passing_run):
    ds, manifest = dataset
    summary, _, _, quarantine_csv = passing_run
    expected = pd.Series([QUIRK_KIND[q] for q in ds.converted.values()]).value_counts()
    assert summary.counts["converted"] == expected.to_dict()
    assert summary.counts["converted_total"] == len(ds.converted)
    assert summary.counts["unlisted"] == len(ds.unlisted)
    assert summary.counts["listed"] == len(ds.ids)
    assert summary.counts["usable"] == len(ds.ids) - len(ds.undecodable) - len(ds.missing)
    assert summary.counts["usable"] == len(_usable(manifest))
    quarantined = set(pd.read_csv(quarantine_csv, keep_default_na=False).image_id)
    assert not quarantined & (set(ds.converted) | set(ds.unlisted))


def _wrong_class_id(m: pd.DataFrame) -> pd.DataFrame:
    m.loc[m.image_id == "Bengal_2", "class_id"] = 3
    return m


def _cat_labelled_dog(m: pd.DataFrame) -> pd.DataFrame:
    m.loc[m.image_id == "Bengal_2", "species"] = "dog"
    return m


def _duplicate_sha256(m: pd.DataFrame) -> pd.DataFrame:
    m.loc[m.image_id == "beagle_3", "sha256"] = m.loc[m.image_id == "Bengal_2", "sha256"].iloc[0]
    return m


def _in_both_splits(m: pd.DataFrame) -> pd.DataFrame:
    twin = m[m.image_id == "Bengal_2"].assign(split="test")
    return pd.concat([m, twin], ignore_index=True)


def _unassigned(m: pd.DataFrame) -> pd.DataFrame:
    m.loc[m.image_id == "Bengal_2", "split"] = "unassigned"
    return m


def _unofficial_breed(m: pd.DataFrame) -> pd.DataFrame:
    m.loc[m.image_id == "Bengal_2", "breed"] = "Bengal_tiger"
    return m


HARD_FAILURES = {
    # case: (manifest edit, params, failed checks, text the message must show)
    "wrong_class_id": (_wrong_class_id, PASSING, {"class_id_matches_breed"}, "Bengal_2"),
    "cat_labelled_dog": (_cat_labelled_dog, PASSING, {"species_matches_breed_case"}, "Bengal_2"),
    "duplicate_sha256": (_duplicate_sha256, PASSING, {"sha256_unique"}, "beagle_3"),
    # too few per breed: test_too_few_per_breed_names_exactly_the_short_breeds
    "too_many_per_breed": (
        None,
        PASSING.model_copy(update={"max_images_per_breed": PER_BREED - 1}),
        {"images_per_breed_in_range"},
        "breed=Bengal",
    ),
    "in_both_splits": (_in_both_splits, PASSING, {"image_id_unique", "sha256_unique"}, "Bengal_2"),
    "unassigned_split": (_unassigned, PASSING, {"split_is_trainval_or_test"}, "Bengal_2"),
    "unofficial_breed": (
        _unofficial_breed,
        PASSING,
        {"breed_is_official", "class_id_matches_breed"},
        "Bengal_tiger",
    ),
    # every photo too small: each is quarantined, and then no photos are left
    "all_too_small": (
        None,
        PASSING.model_copy(update={"min_width": 200}),
        {"has_usable_images", "images_per_breed_in_range"},
        "breed=Bengal",
    ),
    "all_breeds_required": (
        None,
        PASSING.model_copy(update={"require_all_breeds": True}),
        {"all_breeds_present"},
        "missing=",
    ),
}


@pytest.mark.parametrize("case", list(HARD_FAILURES))
def test_hard_failure_raises_naming_the_check_after_writing_outputs(case, dataset, tmp_path):
    ds, manifest = dataset
    edit, params, failed, shown = HARD_FAILURES[case]
    edited = edit(manifest.copy()) if edit else manifest
    with pytest.raises(DataValidationError) as caught:
        _run(edited, tmp_path, params)
    message = str(caught.value)
    for name in failed:
        assert name in message
    assert shown in message
    assert "summary.json" in message and "params.yaml" in message
    # Everything a user needs to look at was written before the stage failed.
    summary = read_json(tmp_path / "reports/validation/summary.json")
    assert summary["success"] is False
    assert set(summary["failed"]) == failed
    for check in summary["expectations"]:
        if check["name"] in failed:
            # row checks give examples; a table-level check (row count) its observed value
            assert check["examples"] or "observed_value" in check
            assert check["expectation_type"] in message
    assert (tmp_path / "reports/validation/data_docs/index.html").is_file()
    quarantine = pd.read_csv(tmp_path / "data/quarantine.csv", keep_default_na=False)
    planted = quarantine[quarantine.reason != "too_small"]
    assert len(planted) == len(ds.undecodable) + len(ds.stray) + len(ds.missing)
    small = quarantine.reason == "too_small"
    assert small.sum() == (len(_usable(edited)) if case == "all_too_small" else 0)


def test_too_few_per_breed_names_exactly_the_short_breeds(dataset, tmp_path):
    ds, manifest = dataset
    lost = {breed_of(Path(f).stem) for f in ds.undecodable} | {breed_of(i) for i in ds.missing}
    params = PASSING.model_copy(update={"min_images_per_breed": PER_BREED})
    with pytest.raises(DataValidationError) as caught:
        _run(manifest, tmp_path, params)
    assert "images_per_breed_in_range" in str(caught.value)
    assert all(f"breed={breed}" in str(caught.value) for breed in lost)
    summary = read_json(tmp_path / "reports/validation/summary.json")
    assert summary["failed"] == ["images_per_breed_in_range"]
    (check,) = [e for e in summary["expectations"] if e["name"] == "images_per_breed_in_range"]
    assert {example["breed"] for example in check["examples"]} == lost


def test_one_tiny_photo_is_quarantined_and_kept_out_of_the_splits(tmp_path, monkeypatch):
    """A 1x1 photo is one bad file, not a bad dataset: validate passes, split leaves it out."""
    from petsml.stage import run_stage
    from stages.split import main as split_main
    from stages.validate import main as validate_main

    ds = make_dataset(tmp_path / "raw", per_breed=PER_BREED, test_per_breed=3)
    tiny = next(
        i for i in ds.trainval if i not in ds.converted and f"{i}.jpg" not in ds.undecodable
    )
    Image.new("RGB", (1, 1), (200, 30, 30)).save(ds.root / "images" / f"{tiny}.jpg", "JPEG")
    manifest = build_manifest(ds.root, workers=2)
    relaxed = {"require_all_breeds": False, "min_images_per_breed": 1, "max_images_per_breed": 50}
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    manifest.to_csv(project / "data/manifest.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"].update(relaxed)  # min_width/min_height stay at the shipped 32 px
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)

    run_stage("validate", validate_main)  # no DataValidationError, no SystemExit
    summary = read_json("reports/validation/summary.json")
    assert summary["success"] is True and summary["failed"] == []
    assert summary["counts"]["quarantined"]["too_small"] == 1
    checks = {e["name"]: e for e in summary["expectations"]}
    assert checks["width_at_least_min"]["severity"] == "warning"
    assert not checks["width_at_least_min"]["success"]
    assert checks["width_at_least_min"]["examples"] == [{"file": f"images/{tiny}.jpg", "width": 1}]
    quarantine = pd.read_csv("data/quarantine.csv", keep_default_na=False)
    (row,) = quarantine[quarantine.image_id == tiny].to_dict("records")
    assert row["reason"] == "too_small" and row["file"] == f"images/{tiny}.jpg"
    assert row["detail"].startswith("1x1 px") and "validate.min_width" in row["detail"]
    assert len(quarantine) == 1 + len(ds.undecodable) + len(ds.stray) + len(ds.missing)

    run_stage("split", split_main)
    split_ids = set().union(*(pd.read_csv(f"data/splits/{n}.csv").image_id for n in SPLITS))
    assert tiny not in split_ids
    listed_ok = set(ds.ids) - {Path(f).stem for f in ds.undecodable} - set(ds.missing)
    assert split_ids == listed_ok - {tiny}  # nothing else was dropped


def test_a_photo_over_the_served_pixel_limit_is_quarantined_too_large_without_bomb_warnings(
    tmp_path, monkeypatch, capfd
):
    """One pixel limit (serve.max_pixels, 40 MP) for serving and training: a 100 MP photo,
    which the served model would refuse, is quarantined as too_large and left out of the
    splits, and measuring it prints no DecompressionBombWarning (PIL's heuristic, > 89 MP)."""
    from petsml.stage import run_stage
    from stages.split import main as split_main
    from stages.validate import main as validate_main

    ds = make_dataset(tmp_path / "raw", per_breed=PER_BREED, test_per_breed=3)
    huge = next(
        i for i in ds.trainval if i not in ds.converted and f"{i}.jpg" not in ds.undecodable
    )
    Image.new("L", (10_000, 10_000), 128).save(ds.root / "images" / f"{huge}.jpg", "JPEG")
    capfd.readouterr()
    manifest = build_manifest(ds.root, workers=2)  # measured in worker processes
    err = capfd.readouterr().err
    assert "DecompressionBomb" not in err, err[-2000:]
    row = manifest.set_index("image_id").loc[huge]
    assert row["decodable"] and (row["width"], row["height"]) == (10_000, 10_000)
    relaxed = {"require_all_breeds": False, "min_images_per_breed": 1, "max_images_per_breed": 50}
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    manifest.to_csv(project / "data/manifest.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"].update(relaxed)  # serve.max_pixels stays at the shipped 40 MP
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)

    run_stage("validate", validate_main)
    summary = read_json("reports/validation/summary.json")
    assert summary["success"] is True and summary["counts"]["quarantined"]["too_large"] == 1
    quarantine = pd.read_csv("data/quarantine.csv", keep_default_na=False)
    (row,) = quarantine[quarantine.image_id == huge].to_dict("records")
    assert row["reason"] == "too_large", row
    assert (
        row["detail"].startswith("10000x10000 = 100000000 pixels")
        and "serve.max_pixels" in (row["detail"])
    )
    run_stage("split", split_main)
    split_ids = set().union(*(pd.read_csv(f"data/splits/{n}.csv").image_id for n in SPLITS))
    assert huge not in split_ids and len(split_ids) > 0


def _stage_project(root: Path, manifest_csv: Path, overrides: dict) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"].update(overrides)
    (root / "data").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(manifest_csv, root / "data/manifest.csv")
    return root


def test_stage_writes_outputs_and_fails_cleanly(dataset, tmp_path, monkeypatch, capsys):
    from petsml.stage import run_stage
    from stages.validate import main

    ds, _ = dataset
    relaxed = {"require_all_breeds": False, "min_images_per_breed": 1, "max_images_per_breed": 50}
    monkeypatch.chdir(_stage_project(tmp_path / "ok", ds.root / "manifest.csv", relaxed))
    run_stage("validate", main)
    assert Path("reports/validation/data_docs/index.html").is_file()
    assert read_json("reports/validation/summary.json")["success"] is True
    assert len(pd.read_csv("data/quarantine.csv")) == 4
    assert sorted(p.name for p in Path(".").iterdir()) == ["data", "params.yaml", "reports"]

    strict = {"require_all_breeds": True}  # the defaults: the full dataset, 150-250 per breed
    monkeypatch.chdir(_stage_project(tmp_path / "strict", ds.root / "manifest.csv", strict))
    with pytest.raises(SystemExit) as caught:
        run_stage("validate", main)
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "ERROR [validate]" in err and "all_breeds_present" in err
    assert "images_per_breed_in_range" in err
    assert read_json("reports/validation/summary.json")["success"] is False


def test_importing_validation_does_not_import_great_expectations():
    code = (
        "import sys, petsml.data.validation, petsml.data; "
        "assert 'great_expectations' not in sys.modules, 'GX imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
