"""The data_issues stage under real `dvc repro`, on generated photos with planted faults: a test
photo's edited copy in trainval (a leak), photos of one class filed under another (label
errors), a photo of a temple among the "pets" (an outlier); then the leak policy both ways,
what advise fits on after the exclusions, and a folder source.

The detectors run the real offline backbone (EfficientNet-Lite0 at 64 px) through the pipeline's
own featurize stage: no features are made up here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from petsml.data.breeds import CLASS_ID
from petsml.testing.fakedata import (
    MirrorServer,
    class_image,
    make_dataset,
    make_image_folder,
    pack_archives,
)
from petsml.testing.faults import edited_copy, non_pet_images, scene_image
from petsml.testing.project import dvc, fake_data_params, make_project, set_params

pytestmark = [pytest.mark.slow(seconds=90), pytest.mark.integration]

OVERRIDES = {"model.image_size": 64, "model.precision": "fp32"}
LEAK_EDITS = ("resize", "mirror", "jpeg")


def _list(ds_root: Path, image_id: str, like: str, split: str) -> None:
    """Add ``image_id`` to the annotations as the breed of ``like`` (an existing id)."""
    annotations = ds_root / "annotations"
    listed = (annotations / "list.txt").read_text().splitlines()
    fields = next(line for line in listed if line.split()[0] == like).split()
    line = " ".join([image_id, *fields[1:]]) + "\n"
    for name in ("list.txt", f"{split}.txt"):
        with (annotations / name).open("a") as out:
            out.write(line)


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    """The official layout with faults planted, run up to data_issues: (project, first run)."""
    root = tmp_path_factory.mktemp("data_issues")
    # 96x72: the generated stripes stay finer than the hash's 8x8 frequencies (texture, which
    # confirms nothing); at the default 72x56 some breeds' stripes land in them and look-alikes
    # of one breed hash alike
    ds = make_dataset(root / "src", per_breed=12, test_per_breed=4, size=(96, 72))
    images = ds.root / "images"
    scene = scene_image(1)
    scene.save(images / "beagle_10.jpg", quality=95)  # a test photo with a layout to hash ...
    edited_copy(scene, LEAK_EDITS, images / "beagle_20.jpg")  # ... copied into trainval
    _list(ds.root, "beagle_20", "beagle_10", "trainval")
    rng = np.random.default_rng(3)
    for number in (21, 22):  # Abyssinian photos (red stripes) labelled pug (cyan ones)
        class_image(CLASS_ID["Abyssinian"], rng, (96, 72)).save(images / f"pug_{number}.jpg")
        _list(ds.root, f"pug_{number}", "pug_1", "trainval")
    _, temple = non_pet_images()[0]
    temple.resize((96, 64)).save(images / "pug_23.jpg")  # a temple labelled pug
    _list(ds.root, "pug_23", "pug_1", "trainval")
    md5 = pack_archives(ds.root, root / "mirror")
    with MirrorServer(root / "mirror") as server:
        project = make_project(root / "p", fake_data_params(server.url, md5) | OVERRIDES)
        first = dvc(project, "repro", "data_issues", timeout=600)
    return project, first


def _report(project: Path) -> dict:
    return json.loads((project / "reports/data_issues.json").read_text())


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_the_stage_finds_the_planted_leak_and_excludes_the_trainval_copy(faulted):
    project, first = faulted
    assert {"featurize", "data_issues"} <= _ran(first.stdout)
    assert "data issues: " in first.stdout  # the one-line summary the stage prints
    report = _report(project)
    pairs = {frozenset((p["a"]["image_id"], p["b"]["image_id"])): p
             for p in report["near_duplicates"]["pairs"]}  # fmt: skip
    leak = pairs[frozenset(("beagle_10", "beagle_20"))]
    assert leak["across_splits"] and leak["mirrored"] and not leak["labels_differ"]
    excluded = pd.read_csv(project / "data/data_issues/excluded.csv")
    assert excluded["image_id"].tolist() == ["beagle_20"]
    assert excluded["reason"].tolist() == ["near_duplicate"] and "test beagle_10" in excluded[
        "detail"
    ].iloc[0]  # fmt: skip
    copy_split = excluded["split"].iloc[0]
    assert report["near_duplicates"]["test_with_train_duplicate"] == (
        ["beagle_10"] if copy_split == "train" else []
    )
    counts = json.loads((project / "reports/data_issues_counts.json").read_text())
    assert counts == report["counts"] and counts["excluded"] == 1
    shown = dvc(project, "metrics", "show", "--json").stdout
    assert "data_issues_counts.json" in shown


def test_the_stage_reports_the_mislabelled_photos_and_the_stray_one(faulted):
    project, _ = faulted
    report = _report(project)
    issues = {i["image_id"]: i for i in report["label_issues"]["issues"]}
    for image_id in ("pug_21", "pug_22"):
        assert issues[image_id]["given_name"] == "pug"
        assert issues[image_id]["suggested_name"] == "Abyssinian"
    assert not any(i["excluded"] for i in issues.values())  # reported only, by default
    outliers = {p["image_id"]: p for p in report["outliers"]["photos"]}
    assert "low_density" in outliers["pug_23"]["reasons"]
    # generated stripes are no animals: the ImageNet rule says why it does not apply
    assert not report["outliers"]["imagenet_rule"]["applies"]
    page = (project / "reports/data_issues.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 4 and "pug_21" in page
    assert "## Near-duplicates" in (project / "reports/data_issues.md").read_text()
    labels = pd.read_csv(project / "data/data_issues/label_issues.csv")
    assert labels["self_confidence"].is_monotonic_increasing


def test_advise_and_train_read_the_exclusions(faulted):
    project, _ = faulted
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        deps = {stage.name: {d.def_path for d in stage.deps} for stage in repo.index.stages}
    for stage in ("advise", "train@feature_extractor", "train@svm_early"):
        assert "data/data_issues/excluded.csv" in deps[stage], stage
    ran = _ran(dvc(project, "repro", "advise", timeout=600).stdout)
    assert ran == {"advise"}  # no second frozen pass
    excluded = pd.read_csv(project / "data/data_issues/excluded.csv")
    train = pd.read_csv(project / "data/splits/train.csv")
    advice = json.loads((project / "reports/advice.json").read_text())
    left_out = int((excluded["split"] == "train").sum())
    assert advice["size"]["train_images"] == len(train) - left_out


def test_on_leak_fail_stops_the_pipeline_naming_the_pair_and_the_key(faulted):
    project, _ = faulted
    set_params(project, {"data_issues.on_leak": "fail"})
    try:
        failed = dvc(project, "repro", "data_issues", check=False, timeout=600)
        assert failed.returncode != 0
        said = failed.stdout + failed.stderr
        assert "near-duplicate pair(s) cross splits" in said and "beagle_20.jpg" in said
        assert "data_issues.on_leak: drop" in said
        assert "the stage fails" in (project / "reports/data_issues.md").read_text()
    finally:
        set_params(project, {"data_issues.on_leak": "drop"})


def test_a_folder_source_is_checked_the_same_way(tmp_path):
    photos = tmp_path / "shapes"
    classes = ("circle", "square", "zebra")
    make_image_folder(photos, classes, per_class=7, size=(64, 48))
    scene = scene_image(5)
    scene.save(photos / "circle" / "900.jpg", quality=95)
    with Image.open(photos / "circle" / "900.jpg") as image:
        edited_copy(image, ("crop",), photos / "circle" / "901.jpg")
    (photos / "test.txt").write_text(
        "circle/900.jpg\n" + "".join(f"{c}/000.jpg\n{c}/001.jpg\n" for c in classes)
    )
    overrides = fake_data_params("", {"images": "0" * 32, "annotations": "0" * 32})
    overrides |= OVERRIDES | {"data.source": "folder", "data.folder": str(photos),
                              "data.test_list": "test.txt"}  # fmt: skip
    project = make_project(tmp_path / "p", overrides)
    dvc(project, "repro", "data_issues", timeout=600)
    report = _report(project)
    files = {
        frozenset((p["a"]["file"], p["b"]["file"])) for p in report["near_duplicates"]["pairs"]
    }
    assert frozenset(("circle/900.jpg", "circle/901.jpg")) in files
    excluded = pd.read_csv(project / "data/data_issues/excluded.csv")
    assert "circle/901.jpg" in set(excluded["image_id"])  # a folder photo's id is its path
    assert "circle/900.jpg" not in set(excluded["image_id"])  # the test copy stays
