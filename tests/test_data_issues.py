"""The data_issues detectors on data with known faults, each part on its own and all together:
near-duplicate pairs and the leak policy both ways, confident learning on swapped labels (its
folds in worker processes too), density and the ImageNet rule, the
exclusion list advise and train read, the report files, the web grid and the comparison's
near-duplicate sentence. Pure and quick: features are generated here; the real backbone runs
in tests/test_data_issues_stage.py; the pixel measures in test_data_issues_pixels.py."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from petsml import paths
from petsml.data.decode import load_rgb
from petsml.data.split import EXCLUDED_COLUMNS, load_fit_split
from petsml.data_issues import duplicates, label_errors, outliers, similarity
from petsml.data_issues.find import DataIssuesError, Photos, find_issues, leak_error
from petsml.data_issues.grid import label_issue_grid
from petsml.data_issues.report import ReportFiles, write_report
from petsml.errors import PetsError
from petsml.testing.faults import edited_copy, scene_image, swap_labels
from petsml.testing.project import shipped_section

SETTINGS = shipped_section("data_issues")


# ------------------------------------------------------------------ near-duplicates, the policy


def _embeddings(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


def test_candidates_are_the_close_pairs_each_once_and_capped():
    x = _embeddings(6)
    x[4] = x[1] + 0.01  # two copies of photo 1
    x[5] = x[1] - 0.01
    found = duplicates.candidate_pairs(x, 0.95)
    assert [(a, b) for a, b, _ in found] == [(1, 4), (1, 5), (4, 5)]
    assert all(c >= 0.95 for *_, c in found)
    capped = duplicates.candidate_pairs(x, 0.95, limit=1)
    assert [(a, b) for a, b, _ in capped] == [(1, 4), (4, 5)]


def test_one_similarity_pass_gives_the_outliers_and_the_candidates_their_definitions():
    x = _embeddings(1300, dim=8, seed=3)  # more rows than one chunk
    x[700] = x[3] * 2.0  # a copy across chunks: cosine 1
    found = similarity.one_pass(x, 5, 0.9)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    nearest = np.sort(cosine, axis=1)[:, -5:]
    assert found.k == 5
    np.testing.assert_allclose(found.neighbour_distance, 1.0 - nearest.mean(axis=1), atol=1e-5)
    upper = np.triu(cosine >= 0.9, k=1)
    assert [(a, b) for a, b, _ in found.candidates] == [tuple(p) for p in np.argwhere(upper)]
    assert (3, 700) in {(a, b) for a, b, _ in found.candidates}
    assert similarity.one_pass(x[:1], 5, 0.9).k == 0  # no other photo: no neighbour


def test_the_leak_policy_keeps_the_most_held_out_copy():
    splits = ["train", "test", "val", "train", "val", "train", "train"]
    pairs = [duplicates.Pair(a, b, 0.9, 4, False) for a, b in ((0, 1), (0, 2), (3, 4), (5, 6))]
    copies = duplicates.groups(len(splits), pairs)
    assert copies == [[0, 1, 2], [3, 4], [5, 6]]
    dropped = duplicates.leak_exclusions(copies, splits)
    # the test photo stays, its train and val copies go; a train/val pair loses the train
    # copy; copies inside one split are no leak
    assert dropped == {0: [1], 2: [1], 3: [4]}


# ------------------------------------------------------------------------------- label errors


def _pid(_: int) -> int:
    return os.getpid()


def _blobs(classes: int, per_class: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 24)) * 3
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + spread * rng.normal(size=(labels.size, 24)), labels


@pytest.mark.parametrize("seed", [0, 1])
def test_confident_learning_finds_swapped_labels(seed):
    x, truth = _blobs(8, 25, 1.5, seed)
    given = truth.copy()
    swapped = swap_labels(truth, 0.06, np.random.default_rng(seed))
    for row, label in swapped.items():
        given[row] = label
    probs, folds = label_errors.out_of_fold_probabilities(x, given, 8, 5, 0.1, seed)
    assert folds == 5 and np.allclose(probs.sum(axis=1), 1)
    found = label_errors.confident_learning(given, probs)
    flagged = set(found.rows.tolist())
    hits = flagged & set(swapped)
    assert len(hits) >= 0.8 * len(swapped) and len(hits) >= 0.7 * len(flagged)
    confidence = found.self_confidence[found.rows]
    assert np.all(np.diff(confidence) >= 0)  # most doubtful first
    assert all(found.suggested[row] == truth[row] for row in hits)  # it names the true class


@pytest.mark.integration  # it starts processes
def test_folds_fitted_in_worker_processes_give_the_same_probabilities():
    x, labels = _blobs(5, 20, 1.5, 4)
    alone, _ = label_errors.out_of_fold_probabilities(x, labels, 5, 4, 0.1, 0)
    if sys.platform != "linux":
        pytest.skip("no fork on this platform: the folds run in-process")
    with label_errors.fold_workers(2) as map_folds:
        side_by_side, _ = label_errors.out_of_fold_probabilities(x, labels, 5, 4, 0.1, 0, map_folds)
        pids = set(map_folds(_pid, range(4)))
    assert np.array_equal(alone, side_by_side)
    assert pids and os.getpid() not in pids  # fitted in the worker processes


def test_clean_labels_raise_few_doubts_and_a_lone_photo_is_not_judged():
    x, labels = _blobs(6, 30, 0.8, 3)
    probs, _ = label_errors.out_of_fold_probabilities(x, labels, 6, 5, 0.1, 0)
    assert label_errors.confident_learning(labels, probs).rows.size <= 0.02 * labels.size
    lonely = np.append(labels, 6)  # one photo of a class nothing else shows
    probs = np.vstack([probs, np.full(6, 1 / 6)])
    probs = np.hstack([probs, np.zeros((len(lonely), 1))])
    found = label_errors.confident_learning(lonely, probs)
    assert not found.judged[-1] and len(lonely) - 1 not in found.rows
    empty, folds = label_errors.out_of_fold_probabilities(x[:0], labels[:0], 6, 5, 0.1, 0)
    assert empty.shape == (0, 6) and folds == 0
    assert label_errors.confident_learning(labels[:0], empty).rows.size == 0


# ---------------------------------------------------------------------------------- outliers


def test_a_photo_far_from_all_others_is_low_density():
    x, _ = _blobs(4, 30, 1.0, 5)
    far = np.random.default_rng(9).normal(size=(2, 24)) * 3  # two strays, unlike each other
    dense = outliers.density(np.vstack([x, far]), 10)
    assert dense.neighbours == 10 and dense.mad > 0
    flagged = np.flatnonzero(dense.z >= SETTINGS.outlier_z)
    strays = {len(x), len(x) + 1}
    assert strays <= set(flagged) and set(np.argsort(-dense.z)[:2]) == strays
    assert len(flagged) <= 2 + 0.03 * len(x)  # a Gaussian's far tail, now and then


def test_the_animal_rule_applies_to_animal_photos_only():
    top1 = np.array([281, 285, 207, 852, 151, 900])  # cats, dogs, a tennis ball, ..., a ...
    animal = np.array([0.9, 0.8, 0.7, 0.3, 0.9, 0.6])
    rule = outliers.not_an_animal(top1, animal)
    assert rule.applies and rule.flagged.tolist() == [False] * 3 + [True, False, False]
    cars = outliers.not_an_animal(np.array([817, 511, 656, 285]), np.array([0.1, 0.2, 0.1, 0.9]))
    assert not cars.applies and not cars.flagged.any() and "25%" in cars.why
    assert not outliers.not_an_animal(None, None).applies


# --------------------------------------------------------------- the exclusions advise/train read


def _splits(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for split, ids in {"train": ["a_1", "a_2", "b_1"], "val": ["a_3", "b_2"]}.items():
        pd.DataFrame({
            "image_id": ids, "file": [f"{i}.jpg" for i in ids], "breed": [i[0] for i in ids],
            "class_id": [int(i[0] == "b") for i in ids], "species": "cat", "species_id": 0,
            "sha256": "x",
        }).to_csv(folder / f"{split}.csv", index=False)  # fmt: skip
    return folder


def test_fit_splits_leave_out_exactly_the_excluded_rows(tmp_path):
    splits = _splits(tmp_path / "splits")
    excluded = tmp_path / "excluded.csv"
    pd.DataFrame([("a_2", "train", "near_duplicate", "a copy of test a_9"),
                  ("b_2", "val", "label_issue", "")], columns=EXCLUDED_COLUMNS).to_csv(
        excluded, index=False)  # fmt: skip
    assert load_fit_split(splits, "train", "breed", excluded)["image_id"].tolist() == ["a_1", "b_1"]
    assert load_fit_split(splits, "val", "breed", excluded)["image_id"].tolist() == ["a_3"]
    assert len(load_fit_split(splits, "train", "breed", None)) == 3
    with pytest.raises(ValueError, match="not 'test'"):
        load_fit_split(splits, "test", "breed", excluded)
    with pytest.raises(PetsError, match="dvc repro data_issues"):
        load_fit_split(splits, "train", "breed", tmp_path / "absent.csv")
    pd.DataFrame([("a_9", "test", "near_duplicate", "")], columns=EXCLUDED_COLUMNS).to_csv(
        excluded, index=False)  # fmt: skip
    with pytest.raises(PetsError, match="test split stays whole"):
        load_fit_split(splits, "train", "breed", excluded)


# ------------------------------------------------------------------- everything, on real files


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """40 scenes of two classes (train, train, val, test, ...; features around two centres),
    edited copies of a test scene and of a val scene in train, two pairs of labels swapped."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    rows, features = [], []
    centres = rng.normal(size=(2, 48))  # same-class cosine ~0.5: few candidate pairs
    for i in range(40):
        label = i % 2
        path = root / f"p{i}.jpg"
        scene_image(100 + i).save(path)
        split = ("train", "train", "val", "test")[i % 4]
        rows.append((f"p{i}", split, label, path.name, str(path), 200))
        features.append(centres[label] + rng.normal(size=48))
    copies = ((3, "copy_of_test", ("resize", "mirror", "jpeg")), (2, "copy_of_val", ("crop",)))
    for original, copy, edits in copies:
        with Image.open(root / f"p{original}.jpg") as image:
            path = edited_copy(image, edits, root / f"{copy}.jpg")
        rows.append((copy, "train", original % 2, path.name, str(path), 200))
        features.append(features[original] + 0.05 * rng.normal(size=48))
    frame = pd.DataFrame(rows, columns=["image_id", "split", "label", "file", "path", "short_side"])
    for first, second in ((0, 1), (4, 9)):  # two train pairs of different classes swap labels
        frame.loc[[first, second], "label"] = frame.loc[[second, first], "label"].to_numpy()
    pixels = np.stack([load_rgb(path, 64) for path in frame["path"]])  # the decoded cache
    return frame, np.array(features), pixels


def _photos(planted) -> Photos:
    frame, features, pixels = planted
    top1 = np.full(len(frame), 281)
    return Photos(frame.copy(), features, top1, np.full(len(frame), 0.9), lambda p: pixels[p])


def _settings(**overrides):
    return shipped_section("data_issues", **overrides)


def test_find_issues_reports_each_planted_fault_and_drops_the_leaked_copies(planted):
    found = find_issues(_photos(planted), ["cats", "dogs"], _settings(), 64)
    dupes = found.report["near_duplicates"]
    pairs = {frozenset((p["a"]["image_id"], p["b"]["image_id"])) for p in dupes["pairs"]}
    assert pairs == {frozenset(("p3", "copy_of_test")), frozenset(("p2", "copy_of_val"))}
    assert dupes["test_with_train_duplicate"] == ["p3"]
    assert sorted(found.excluded["image_id"]) == ["copy_of_test", "copy_of_val"]
    assert set(found.excluded["reason"]) == {"near_duplicate"}
    assert "test p3" in found.excluded.set_index("image_id").loc["copy_of_test", "detail"]
    flagged = set(found.label_issues["image_id"])
    assert {"p0", "p1", "p4", "p9"} <= flagged and len(flagged) <= 6
    assert found.label_issues["self_confidence"].is_monotonic_increasing
    assert not found.label_issues["excluded"].any()  # reported only, by default
    assert found.counts["test_with_train_duplicate"] == 1 and found.counts["excluded"] == 2
    assert leak_error(found, "r.md") is None  # drop: no error


def test_on_leak_fail_stops_naming_the_pair_and_the_key(planted):
    found = find_issues(_photos(planted), ["cats", "dogs"], _settings(on_leak="fail"), 64)
    assert found.excluded.empty  # nothing is dropped: the run stops instead
    error = leak_error(found, "reports/data_issues.md")
    assert isinstance(error, DataIssuesError)
    message = str(error)
    assert "2 near-duplicate pair(s) cross splits" in message and "copy_of_test.jpg" in message
    assert "data_issues.on_leak: drop" in message and "reports/data_issues.md" in message


def test_label_issues_are_excluded_only_when_asked(planted):
    found = find_issues(_photos(planted), ["cats", "dogs"], _settings(exclude_label_issues=True),
                        64)  # fmt: skip
    label_rows = found.excluded[found.excluded["reason"] == "label_issue"]
    assert set(label_rows["image_id"]) == set(found.label_issues["image_id"])
    assert set(label_rows["split"]) <= {"train", "val"}
    assert found.label_issues["excluded"].all()


def test_report_files_are_offline_and_the_grid_reads_them_back(planted, tmp_path):
    photos = _photos(planted)
    found = find_issues(photos, ["cats", "dogs"], _settings(max_shown=3), 64)
    files = ReportFiles(
        json=tmp_path / paths.DATA_ISSUES_JSON, md=tmp_path / paths.DATA_ISSUES_MD,
        html=tmp_path / paths.DATA_ISSUES_HTML, counts=tmp_path / paths.DATA_ISSUES_COUNTS,
        data=tmp_path / paths.DATA_ISSUES,
    )  # fmt: skip
    by_id = dict(zip(photos.frame["image_id"], photos.frame["path"], strict=True))
    write_report(found, files, {k: Path(v) for k, v in by_id.items()}, 3)
    page = files.html.read_text()
    assert "data:image/jpeg;base64," in page and not re.search(r"(src|href)=\"https?:", page)
    assert "<script" not in page and "... and" in page  # max_shown cut the label grid
    assert json.loads(files.counts.read_text()) == found.counts
    assert json.loads(files.json.read_text())["counts"] == found.counts
    assert "## Likely label errors" in files.md.read_text()
    excluded = pd.read_csv(files.data / "excluded.csv")
    assert list(excluded.columns) == EXCLUDED_COLUMNS and len(excluded) == 2
    grid = label_issue_grid(tmp_path)
    assert [c["image_id"] for c in grid] == found.label_issues["image_id"].tolist()
    assert set(grid[0]) >= {"image_id", "given_name", "suggested_name", "self_confidence"}
    assert len(label_issue_grid(tmp_path, limit=2)) == 2
    assert label_issue_grid(tmp_path / "elsewhere") == []


def test_a_photo_table_without_features_for_every_row_is_refused(planted):
    frame, features, pixels = planted
    with pytest.raises(DataIssuesError, match="featurize"):
        Photos(frame, features[:-1], None, None, lambda p: pixels[p])


# ------------------------------------------------------------------ the comparison's sentence


def test_the_comparison_states_test_accuracy_without_the_leaked_test_photos(tmp_path):
    from petsml.evaluation.comparison import near_duplicate_check

    none = near_duplicate_check(tmp_path, ["feature_extractor"])
    assert not none.about["checked"] and "dvc repro data_issues" in none.about["what"]
    report = {"near_duplicates": {"test_with_train_duplicate": ["t1", "t2"]}}
    (tmp_path / paths.DATA_ISSUES_JSON).parent.mkdir(parents=True)
    (tmp_path / paths.DATA_ISSUES_JSON).write_text(json.dumps(report))
    predictions = tmp_path / paths.predictions_csv("feature_extractor")
    predictions.parent.mkdir(parents=True)
    scored = {"image_id": ["t1", "t2", "t3", "t4", "t5"], "correct": [1, 1, 1, 0, 1]}
    pd.DataFrame(scored).astype({"correct": bool}).to_csv(predictions, index=False)
    check = near_duplicate_check(tmp_path, ["feature_extractor", "svm_early"])
    assert check.about["test_with_train_duplicate"] == ["t1", "t2"]
    assert "2 test photo(s) have a near-duplicate in train" in check.about["what"]
    assert "on the 3 other test photos: `feature_extractor` 0.667" in check.about["what"]
    row = check.part(type("Run", (), {"strategy": "feature_extractor"})(), None)
    assert row == {"test_accuracy_without_duplicates": pytest.approx(2 / 3)}


def test_bad_settings_name_the_key():
    from petsml.config import ConfigError

    with pytest.raises(ConfigError, match=r"data_issues.on_leak: .*'drop' or 'fail'"):
        shipped_section("data_issues", on_leak="quarantine")
    with pytest.raises(ConfigError, match="data_issues.duplicate_hash_bits"):
        shipped_section("data_issues", duplicate_hash_bits=40)
    with pytest.raises(ConfigError, match="data_issues.folds"):
        shipped_section("data_issues", folds=1)
