"""Manifest facts and split rules on a generated dataset with the real dataset's quirks."""

from __future__ import annotations

import pandas as pd
import pytest

from petsml.data.manifest import AnnotationError, build_manifest, read_annotation_list
from petsml.data.split import SplitLeakError, assert_disjoint, load_split, make_splits
from petsml.testing.fakedata import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    ds = make_dataset(root, per_breed=10, test_per_breed=3)
    return ds, build_manifest(root, workers=1)


def test_manifest_records_every_listed_id_and_every_file(dataset):
    ds, manifest = dataset
    assert set(manifest.loc[manifest.listed, "image_id"]) == set(ds.ids)
    unlisted = manifest[~manifest.listed]
    assert set(unlisted.image_id) == set(ds.unlisted) | {s.split(".")[0] for s in ds.stray}
    missing = manifest[~manifest.exists]
    assert list(missing.image_id) == ds.missing and not missing.decodable.any()


def test_manifest_measures_formats_and_decodability(dataset):
    ds, manifest = dataset
    by_id = manifest.set_index("image_id")
    assert by_id.loc[[k for k, v in ds.converted.items() if v == "png_rgba"][0], "format"] == "PNG"
    assert by_id.loc[[k for k, v in ds.converted.items() if v == "cmyk"][0], "mode"] == "CMYK"
    undecodable = {f.split(".")[0] for f in ds.undecodable}
    assert (
        set(manifest.loc[manifest.exists & ~manifest.decodable & manifest.listed, "image_id"])
        == undecodable
    )
    ok = manifest[manifest.decodable]
    assert (ok.width > 0).all() and ok.sha256.str.len().eq(64).all()


def test_class_ids_are_zero_based_and_header_is_skipped(dataset):
    _, manifest = dataset
    row = manifest.set_index("image_id").loc["pug_1"]
    assert row.class_id == 25 and row.species == "dog"
    assert row.split == "trainval"


def test_malformed_annotation_names_file_and_line(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("#header\nAbyssinian_1 1 1 1\nbroken line\n")
    with pytest.raises(AnnotationError, match=r"list.txt:3"):
        read_annotation_list(bad)


def test_splits_are_stratified_seeded_and_disjoint(dataset, tmp_path):
    _, manifest = dataset
    quarantine = pd.DataFrame(
        {"image_id": ["beagle_1"], "file": ["images/beagle_1.jpg"], "reason": ["test"]}
    )
    splits = make_splits(manifest, quarantine, val_fraction=0.3, seed=7)
    again = make_splits(manifest, quarantine, val_fraction=0.3, seed=7)
    other = make_splits(manifest, quarantine, val_fraction=0.3, seed=8)
    assert splits["val"].image_id.tolist() == again["val"].image_id.tolist()
    assert splits["val"].image_id.tolist() != other["val"].image_id.tolist()
    test_ids = set(manifest.loc[manifest.split == "test", "image_id"]) - set(
        manifest.loc[~manifest.decodable, "image_id"]
    )
    assert set(splits["test"].image_id) == test_ids
    assert set(splits["val"].breed) == set(splits["train"].breed)  # every breed validated
    used = pd.concat(splits.values())
    assert "beagle_1" not in set(used.image_id)
    assert not used.image_id.str.endswith("_999").any()  # unlisted files never train
    for name, frame in splits.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    species = load_split(tmp_path / "train.csv", "species")
    assert set(species.label) == {0, 1}
    breed = load_split(tmp_path / "train.csv", "breed")
    assert (breed.label == breed.class_id).all()


def test_split_refuses_shared_content():
    a = pd.DataFrame({"image_id": ["x_1"], "sha256": ["same"]})
    b = pd.DataFrame({"image_id": ["y_1"], "sha256": ["same"]})
    with pytest.raises(SplitLeakError, match="sha256 value"):
        assert_disjoint({"train": a, "test": b})


@pytest.mark.integration
def test_id_in_both_official_lists_is_recorded_as_such(tmp_path):
    ds = make_dataset(tmp_path, per_breed=4, test_per_breed=1, quirks=False)
    trainval = tmp_path / "annotations" / "trainval.txt"
    test_line = (tmp_path / "annotations" / "test.txt").read_text().splitlines()[0]
    trainval.write_text(trainval.read_text() + test_line + "\n")
    manifest = build_manifest(tmp_path, workers=1)
    leaked = manifest.set_index("image_id").loc[test_line.split()[0], "split"]
    assert leaked == "trainval+test" and len(ds.ids) == len(manifest)
    assert manifest["class_id"].dtype.kind == "i"  # no unlisted rows must not turn ids to float
