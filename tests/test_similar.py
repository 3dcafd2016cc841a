"""Similar-photo search: exact cosine search, the index inside the registered model, the
optional ``neighbours`` output and ``pets similar``."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from petsml.similar.index import IndexFileError, NeighbourIndex

pytestmark = pytest.mark.integration


def _index(n: int = 300, dim: int = 16, seed: int = 0) -> NeighbourIndex:
    rng = np.random.default_rng(seed)
    breeds = [f"b{i % 5}" for i in range(n)]
    centres = rng.standard_normal((5, dim)) * 3
    vectors = centres[[i % 5 for i in range(n)]] + rng.standard_normal((n, dim))
    return NeighbourIndex.build(vectors, [f"p{i}" for i in range(n)], breeds,
                                [f"images/p{i}.jpg" for i in range(n)])  # fmt: skip


def test_search_is_exact_cosine_like_sklearn_and_leave_one_out_skips_the_photo_itself(tmp_path):
    from sklearn.neighbors import NearestNeighbors

    index = _index()
    queries = np.random.default_rng(1).standard_normal((7, index.dim)) * 5  # not normalised
    distances, rows = index.search(queries, 6)
    nn = NearestNeighbors(n_neighbors=6, algorithm="brute", metric="cosine").fit(index.embeddings)
    want_d, want_rows = nn.kneighbors(queries)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()

    _, own = index.search(index.embeddings[:10], 1)
    assert own[:, 0].tolist() == list(range(10))  # a photo's nearest is itself...
    _, others = index.search(index.embeddings, 3, exclude_self=True)
    assert not (others == np.arange(len(index))[:, None]).any()  # ...unless left out
    assert 0.9 < index.leave_one_out_agreement() <= 1.0  # well-separated clusters

    index.save(tmp_path / "index.npz")
    again = NeighbourIndex.load(tmp_path / "index.npz")
    np.testing.assert_allclose(again.embeddings, index.embeddings, atol=1e-6)
    assert again.file[3] == "images/p3.jpg" and again.breed[3] == "b3"
    with pytest.raises(IndexFileError, match="dimensions"):
        index.search(np.ones((1, 3)), 2)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(IndexFileError, match="bad.npz"):
        NeighbourIndex.load(tmp_path / "bad.npz")


def test_a_model_without_an_index_refuses_neighbours_but_still_predicts(tiny_model):
    from petsml.tracking.pyfunc import OUTPUT_COLUMNS, InputColumnsError, PetClassifierModel
    from tests.models import write_jpeg

    model = PetClassifierModel()
    model.load_context(SimpleNamespace(artifacts={"model": str(tiny_model)}, model_config={}))
    photo = write_jpeg(tiny_model.parent / "a.jpg", class_index=1, seed=1)
    frame = pd.DataFrame({"image": [base64.b64encode(photo.read_bytes()).decode()]})
    assert list(model.predict(None, frame).columns) == list(OUTPUT_COLUMNS)
    with pytest.raises(InputColumnsError, match="without a neighbour index"):
        model.predict(None, frame, params={"neighbours": 3})


def _load(project: Path, uri: str, config: dict):
    from petsml.tracking.alias_model import load_alias_model
    from petsml.tracking.model_registry import ModelRegistry

    return load_alias_model(ModelRegistry("oxford-pets-breed", uri), "champion", config)


def test_the_registered_model_carries_an_index_of_train_and_val_photos_under_its_backbone(
    registered_project,
):
    """The champion's neighbours of a training photo start with that photo (distance 0): the
    index and the model's own embedding of a query agree. The index holds train + val only."""
    project, uri, _ = registered_project
    splits = {n: pd.read_csv(project / "data" / "splits" / f"{n}.csv") for n in
              ("train", "val", "test")}  # fmt: skip
    loaded = _load(project, uri, {"allow_paths": True})
    files = [str(project / "data" / "raw" / f) for f in splits["train"]["file"][:3]]
    plain = loaded.model.predict(pd.DataFrame({"image": files}))
    assert "neighbours" not in plain.columns  # off by default: the REST schema is unchanged
    asked = loaded.model.predict(pd.DataFrame({"image": [*files, "no-such.jpg"]}),
                                 params={"neighbours": 4})  # fmt: skip
    rows = [json.loads(cell) for cell in asked["neighbours"][:3]]
    assert asked["neighbours"][3] is None and asked["error"][3]
    for row, image_id in zip(rows, splits["train"]["image_id"][:3], strict=True):
        assert len(row) == 4 and row[0]["image_id"] == image_id
        assert row[0]["distance"] < 1e-4 <= row[-1]["distance"] + 1e-4
        assert [r["distance"] for r in row] == sorted(r["distance"] for r in row)
    index = loaded.model.unwrap_python_model().index
    indexed = set(index.image_id.tolist())
    assert indexed == set(splits["train"]["image_id"]) | set(splits["val"]["image_id"])
    assert not indexed & set(splits["test"]["image_id"])
    assert loaded.describe()["strategy"] == "feature_extractor"
    assert loaded.describe()["test_accuracy"] == pytest.approx(0.58)


def test_pets_similar_prints_breed_distance_and_path_and_fails_per_file(registered_project, capsys):
    from petsml.cli import main

    project, uri, _ = registered_project
    photo = project / "data" / "raw" / pd.read_csv(project / "data/splits/val.csv")["file"][0]
    argv = ["similar", str(photo), str(project / "missing.jpg"), "-k", "3",
            "--tracking-uri", uri, "--params", str(project / "params.yaml")]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    assert done.value.code == 1 and "1 of 2 file(s) not searched" in err
    lines = out.splitlines()
    assert "models:/oxford-pets-breed@champion (version 1)" in lines[0]
    assert f"{photo}: predicted " in out and "missing.jpg: ERROR no such file" in out
    hits = [line.split() for line in lines if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(hits) == 3
    assert hits[0][2] == "0.0000"
    assert hits[0][3] == str(photo)  # in the data source's folder, openable from here
    assert all(Path(hit[3]).is_file() for hit in hits)
