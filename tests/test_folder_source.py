"""``data.source: folder``: your own photos in the ImageFolder layout, through the data stages.

Library-level tests on tiny generated folders: the manifest, the quarantine and validation, the
stratified split, every bad input, the params keys and the registry name. The whole pipeline on a
folder, driven by the scheduled deployment's flow, is ``test_continuous_training.py``.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from petsml import config
from petsml.catalog import sources
from petsml.config import ConfigError, parse_params
from petsml.data.folder import FolderSourceError, build_folder_manifest, listed_classes
from petsml.data.sources import get_source
from petsml.data.split import CLASSES, class_names, make_splits, write_classes
from petsml.data.validation import DataValidationError, folder_rules, validate_manifest
from petsml.testing.fakedata import make_image_folder
from petsml.testing.project import REPO

pytestmark = pytest.mark.integration

CLASS_NAMES = ("circle", "square", "zebra")


def _params(**data) -> config.Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(data)
    return parse_params(raw)


def _error(**data) -> str:
    with pytest.raises(ConfigError) as caught:
        _params(**data)
    return str(caught.value)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three classes of eight photos, a stray text file, a corrupt JPEG, a hidden file."""
    root = tmp_path_factory.mktemp("folder") / "shapes"
    make_image_folder(root, CLASS_NAMES, per_class=8)
    (root / "zebra" / "notes.txt").write_text("not a photo")
    (root / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "circle" / ".DS_Store").write_bytes(b"\0\0")
    (root / "README.md").write_text("top-level file, no class")
    return root


def test_every_registered_source_resolves_and_an_unknown_one_is_named():
    for name, row in sources.ROWS.items():
        assert get_source(name).name == name and row.name == name
    with pytest.raises(Exception, match="oxford-pets, folder"):
        get_source("nope")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["source"] = "ftp"
    with pytest.raises(config.ConfigError, match=r"data.source: .*'ftp' is not a data source"):
        config.parse_params(raw)


def test_default_params_are_the_official_data_under_the_official_name():
    params = _params()
    assert (params.data.source, params.data.folder) == ("oxford-pets", "data/raw")
    assert params.registered_model_name == "oxford-pets-breed"
    assert params.data.dataset_name == "oxford-pets"


def test_a_folder_registers_under_its_own_name(tmp_path):
    folder = tmp_path / "my-shapes"
    assert _params(source="folder", folder=str(folder)).registered_model_name == (
        "oxford-pets-my-shapes"
    )
    named = _params(source="folder", folder=str(folder), name="shapes_v2")
    assert named.registered_model_name == "oxford-pets-shapes_v2"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"source": "folder"}, "data.folder: data.source is folder but data.folder is"),
        ({"folder": "photos"}, "data.folder: 'photos' with data.source 'oxford-pets'"),
        ({"test_list": "test.txt"}, "data.test_list: applies to data.source: folder only"),
        ({"source": "folder", "folder": "p", "task": "species"}, "data.task: 'species'"),
        ({"source": "folder", "folder": "p", "test_list": "../t.txt"}, "data.test_list: '../t"),
        ({"source": "folder", "folder": "p", "name": "my photos"}, "data.name: 'my photos'"),
        (
            {"source": "images"},
            "data.source: 'images' is not a data source; use one of oxford-pets, folder",
        ),
    ],
)
def test_bad_folder_params_name_the_key(data, key):
    assert key in _error(**data)


def test_new_validate_and_split_keys_are_checked():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["validate"].update(min_images_per_class=9, max_images_per_class=4)
    raw["split"]["test_fraction"] = 0.85
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert "validate.min_images_per_class: must not exceed" in str(caught.value)
    assert "split.test_fraction: split.val_fraction + split.test_fraction" in str(caught.value)


def test_the_params_stage_names_a_missing_folder(tmp_path, monkeypatch):
    from petsml.params_check import check_params_file

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="folder", folder=str(tmp_path / "nowhere"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"data.folder: .*nowhere does not exist"):
        check_params_file(tmp_path / "params.yaml")


def test_manifest_lists_every_file_with_its_class_and_facts(photos):
    table = build_folder_manifest(photos, workers=1)
    listed = table[table["listed"]]
    assert listed_classes(table) == list(CLASS_NAMES)
    assert sorted(listed["breed"].unique()) == list(CLASS_NAMES)
    assert (listed["class_id"] == listed["breed"].map(CLASS_NAMES.index)).all()
    assert set(listed["split"]) == {"trainval"}
    assert (table["image_id"] == table["file"]).all() and table["image_id"].is_unique
    broken = table.set_index("file").loc["square/broken.jpg"]
    assert broken["listed"] and not broken["decodable"]
    stray = table[~table["listed"]].set_index("file")
    assert set(stray.index) == {"zebra/notes.txt", "README.md"}  # .DS_Store: hidden, skipped
    assert not stray["decodable"].any()


def test_quarantine_and_validation_treat_a_folder_as_the_official_data(photos, tmp_path):
    manifest = build_folder_manifest(photos, workers=1)
    params = _params(source="folder", folder=str(photos)).validate_params
    rules = folder_rules(params, listed_classes(manifest), str(photos))
    summary = validate_manifest(manifest, params, tmp_path / "v", tmp_path / "q.csv", rules)
    quarantine = pd.read_csv(tmp_path / "q.csv")
    reasons = dict(zip(quarantine["file"], quarantine["reason"], strict=True))
    assert reasons == {
        "square/broken.jpg": "undecodable",
        "zebra/notes.txt": "not_an_image",
        "README.md": "not_an_image",
    }
    assert summary.success and summary.counts["usable"] == 24
    names = {check["name"] for check in summary.expectations}
    assert {"class_is_a_class_folder", "images_per_class_in_range"} <= names
    assert not names & {"species_is_cat_or_dog", "breed_is_official", "all_breeds_present"}


def test_photos_in_a_sub_folder_of_a_class_are_named_and_quarantined_not_labelled(
    photos, tmp_path, caplog
):
    """`circle/nested/square_1.jpg` was silently labelled circle and trained on. Now the
    manifest names the sub-folder in a warning and validation quarantines its photos as
    nested_folder, saying where they are and what to do; the class keeps its other photos."""
    import logging
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(photos, root)
    (root / "circle" / "nested").mkdir()
    shutil.copy(root / "square" / "000.jpg", root / "circle" / "nested" / "square_1.jpg")
    with caplog.at_level(logging.WARNING, logger="petsml.data.folder"):
        manifest = build_folder_manifest(root, workers=1)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "circle/nested/ (1)" in warned and "nested_folder" in warned, warned
    params = _params(source="folder", folder=str(root)).validate_params
    rules = folder_rules(params, listed_classes(manifest), str(root))
    summary = validate_manifest(manifest, params, tmp_path / "v", tmp_path / "q.csv", rules)
    quarantine = pd.read_csv(tmp_path / "q.csv").set_index("file")
    row = quarantine.loc["circle/nested/square_1.jpg"]
    assert row["reason"] == "nested_folder"
    assert "sub-folder circle/nested/ of class folder circle/" in row["detail"]
    assert "move it into the folder of the class it shows" in row["detail"]
    assert summary.success and summary.counts["usable"] == 24  # not one more circle
    assert summary.counts["quarantined"]["nested_folder"] == 1


def test_a_class_short_of_photos_stops_validation_naming_it_and_the_key(photos, tmp_path):
    manifest = build_folder_manifest(photos, workers=1)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["validate"]["min_images_per_class"] = 9  # 8 usable photos per class
    params = parse_params(raw).validate_params
    rules = folder_rules(params, listed_classes(manifest), str(photos))
    with pytest.raises(DataValidationError) as caught:
        validate_manifest(manifest, params, tmp_path / "v", tmp_path / "q.csv", rules)
    message = str(caught.value)
    assert "images_per_class_in_range" in message and "breed=square usable_images=8" in message
    assert f"Fix the photos in {photos}" in message
    assert "validate.min_images_per_class" in message


def test_stratified_split_draws_every_class_into_train_val_and_test(photos):
    manifest = build_folder_manifest(photos, workers=1)
    usable = manifest[manifest["decodable"] & manifest["listed"]]
    quarantine = pd.DataFrame({"file": []})
    splits = make_splits(usable, quarantine, val_fraction=0.2, seed=3, test_fraction=0.25)
    again = make_splits(usable, quarantine, val_fraction=0.2, seed=3, test_fraction=0.25)
    for name, frame in splits.items():
        assert sorted(frame["breed"].unique()) == list(CLASS_NAMES), name
        pd.testing.assert_frame_equal(frame, again[name])  # seeded
    assert splits["test"]["breed"].value_counts().to_dict() == {"circle": 2, "square": 2,
                                                                "zebra": 2}  # fmt: skip
    ids = [set(frame["image_id"]) for frame in splits.values()]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 24
    other = make_splits(usable, quarantine, val_fraction=0.2, seed=4, test_fraction=0.25)
    assert set(other["test"]["image_id"]) != set(splits["test"]["image_id"])


def test_a_test_list_fixes_the_test_images(photos, tmp_path):
    listed = ["circle/000.jpg", "square/001.jpg", "zebra/002.jpg", "zebra/003.jpg"]
    (photos / "test.txt").write_text("# fixed test images\n" + "\n".join(listed) + "\n\n")
    try:
        manifest = build_folder_manifest(photos, "test.txt", workers=1)
    finally:
        (photos / "test.txt").unlink()
    assert "test.txt" not in set(manifest["file"])  # the list is not a stray file
    assert sorted(manifest.loc[manifest["split"] == "test", "file"]) == listed
    splits = make_splits(manifest, pd.DataFrame({"file": []}), 0.2, 0)
    assert sorted(splits["test"]["image_id"]) == listed


def test_class_names_come_from_the_split_folder_or_the_official_list(tmp_path):
    assert len(class_names(tmp_path, "breed")) == 37 and class_names(tmp_path, "species") == [
        "cat",
        "dog",
    ]
    write_classes(tmp_path, list(CLASS_NAMES))
    assert (tmp_path / CLASSES).is_file()
    assert class_names(tmp_path, "breed") == list(CLASS_NAMES)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, "does not exist. Point data.folder"),
        ({"only": 3}, "1 class folder(s) (only 'only'); a classifier needs at least 2"),
        ({}, "0 class folder(s) (none)"),
        ({"a": 3, "b": 0}, "class folder(s) b hold no image files"),
    ],
)
def test_a_folder_that_is_not_image_folder_layout_is_refused_naming_it(tmp_path, layout, message):
    root = tmp_path / "photos"
    if layout is not None:
        root.mkdir()
        for name, count in layout.items():
            make_image_folder(root, (name,), per_class=count) if count else (root / name).mkdir()
    with pytest.raises(FolderSourceError) as caught:
        build_folder_manifest(root, workers=1)
    assert message in str(caught.value) and str(root) in str(caught.value)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("dgo/000.jpg", "no class folder 'dgo'"),
        ("../escape.jpg", "is not <class>/<file>"),
        ("loose.jpg", "is not <class>/<file>"),
    ],
)
def test_a_bad_test_list_line_is_refused_naming_the_file_and_line(tmp_path, lines, message):
    root = tmp_path / "photos"
    make_image_folder(root, ("a", "b"), per_class=2)
    (root / "test.txt").write_text(f"a/000.jpg\n{lines}\n")
    with pytest.raises(FolderSourceError, match=rf"test.txt:2: .*{message}"):
        build_folder_manifest(root, "test.txt", workers=1)


def test_a_missing_test_list_and_a_listed_photo_without_file(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root, ("a", "b"), per_class=2)
    with pytest.raises(FolderSourceError, match="test.txt: the test list data.test_list names"):
        build_folder_manifest(root, "test.txt", workers=1)
    (root / "test.txt").write_text("a/000.jpg\nb/404.jpg\n")
    table = build_folder_manifest(root, "test.txt", workers=1).set_index("file")
    gone = table.loc["b/404.jpg"]  # quarantined as `missing`, as on the official data
    assert gone["listed"] and not gone["exists"] and gone["split"] == "test"
    assert "listed in test.txt but no file" in gone["error"]


def test_an_unreadable_file_is_a_fact_not_a_crash(tmp_path):
    from petsml.data.manifest import inspect_file

    facts = inspect_file(tmp_path)  # a folder where a file should be: reading it fails
    assert not facts.decodable and facts.error.startswith("unreadable: IsADirectoryError")


def test_classes_named_by_numbers_stay_names_through_the_manifest_file(tmp_path):
    from petsml.data.manifest import read_manifest

    root = tmp_path / "digits"
    make_image_folder(root, ("0", "1", "10"), per_class=5)
    build_folder_manifest(root, workers=1).to_csv(tmp_path / "manifest.csv", index=False)
    manifest = read_manifest(tmp_path / "manifest.csv")  # as the validate stage reads it
    params = _params(source="folder", folder=str(root)).validate_params
    rules = folder_rules(params, listed_classes(manifest), str(root))
    assert rules.classes == ("0", "1", "10")
    summary = validate_manifest(manifest, params, tmp_path / "v", tmp_path / "q.csv", rules)
    assert summary.success, summary.describe_failures()
