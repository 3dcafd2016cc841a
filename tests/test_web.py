"""``pets web``'s server on a registered model: answers, similar photos, every bad input gets a
readable message and the server keeps serving, thumbnails only of indexed photos, registry view.

The ASGI app runs in-process (Starlette's TestClient) over a real MLflow registry; the page
itself is driven in a real browser by tests/test_web_page.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from petsml.catalog import metrics as metrics_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(registered_project):
    from fastapi.testclient import TestClient

    from petsml.web.server import create_app

    project, uri, _ = registered_project
    app = create_app("oxford-pets-breed", uri, params_path=project / "params.yaml",
                     project_root=project)  # fmt: skip
    with TestClient(app) as test_client:
        yield test_client, project


def _photo(project):
    return sorted((project / "data" / "raw" / "images").glob("*.jpg"))[0]


def _encoded(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def test_a_photo_gets_breed_top5_neighbours_and_which_model_answered(client):
    test_client, project = client
    assert "Drop a photo" in test_client.get("/").text
    assert test_client.get("/static/app.js").status_code == 200
    answer = test_client.post("/api/predict", content=_photo(project).read_bytes()).json()
    assert answer["label"] and len(answer["top5"]) == 5 and len(answer["neighbours"]) == 8
    assert answer["neighbours"][0]["distance"] < 1e-4  # a training photo finds itself
    assert answer["model"]["version"] == "1" and answer["model"]["alias"] == "champion"
    assert answer["model"]["strategy"] == "feature_extractor"
    assert answer["model"]["test_accuracy"] == pytest.approx(0.58)
    thumb = test_client.get(answer["neighbours"][0]["thumb"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 160
    # only indexed photos are served: not test photos, not paths
    assert test_client.get("/api/photo/..%2F..%2Fparams.yaml").status_code == 404
    assert test_client.get("/api/photo/not_indexed_1").status_code == 404


def test_bad_uploads_get_a_readable_message_odd_modes_an_answer_and_serving_goes_on(client):
    test_client, project = client
    photo = Image.open(_photo(project))
    refused = {
        "empty": (b"", 400, "the file is empty"),
        "text": (b"just some text, not a photo\n" * 10, 400, "not an image file"),
        "20 MB": (b"\xff" * (20 * 1024 * 1024 + 1), 413, "over the limit of 20,971,520 bytes"),
        "truncated": (_photo(project).read_bytes()[:300], 400, "cannot decode image"),
    }
    for what, (body, status, message) in refused.items():
        answer = test_client.post("/api/predict", content=body)
        assert answer.status_code == status, what
        assert message in answer.json()["error"], (what, answer.json())
    grey = np.asarray(photo.convert("L"))
    odd = {
        "CMYK JPEG": _encoded(photo.convert("CMYK"), "JPEG"),
        "RGBA PNG": _encoded(photo.convert("RGBA"), "PNG"),
        "16-bit PNG": _encoded(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        "GIF": _encoded(photo.convert("P"), "GIF"),
    }
    eight_bit = test_client.post("/api/predict", content=_encoded(Image.fromarray(grey), "PNG"))
    for what, body in odd.items():
        answer = test_client.post("/api/predict", content=body)
        assert answer.status_code == 200 and answer.json()["label"], (what, answer.json())
    # a 16-bit photo is rescaled, not clipped to white: it answers like its 8-bit twin
    sixteen = test_client.post("/api/predict", content=odd["16-bit PNG"]).json()["top5"]
    twin = eight_bit.json()["top5"]
    assert [t["label"] for t in sixteen] == [t["label"] for t in twin]
    assert [t["probability"] for t in sixteen] == pytest.approx([t["probability"] for t in twin])
    assert test_client.get("/api/model").status_code == 200  # still serving


def test_the_models_view_lists_versions_with_aliases_and_the_strategy_comparison(client):
    test_client, project = client
    view = test_client.get("/api/registry").json()
    assert [v["version"] for v in view["versions"]] == ["1"]
    assert view["versions"][0]["aliases"] == ["challenger", "champion"]
    assert view["versions"][0]["test_accuracy"] == pytest.approx(0.58)
    # the table's columns: every metric the registry tags on a version, each row holding them
    tagged = [row.key for row in metrics_catalog.rows() if row.tag]
    assert view["version_columns"] == [
        "version",
        "aliases",
        "strategy",
        "backbone",
        *tagged,
        "gate",
    ]
    assert set(view["version_columns"]) <= set(view["versions"][0])
    rows = {row["strategy"]: row for row in view["comparison"]["rows"]}
    assert view["comparison"]["source"] == "reports/metrics.json"  # no comparison.json here
    assert rows["finetune_top"]["test_accuracy"] == pytest.approx(0.52)


def test_an_index_entry_leading_out_of_the_photo_folder_is_never_served(client, monkeypatch):
    """The index is the first guard; the data source's folder is the second: a ``file`` that
    resolves outside it (``../``, absolute) gets 404 even when the index names it."""
    test_client, project = client
    holder = test_client.app.state.holder
    escapes = {"up": "../../params.yaml", "absolute": str(project / "params.yaml")}
    monkeypatch.setattr(holder, "photo_file", lambda image_id: escapes.get(image_id))
    for image_id in escapes:
        answer = test_client.get(f"/api/photo/{image_id}")
        assert answer.status_code == 404 and "no indexed photo" in answer.json()["error"]
    monkeypatch.undo()
    photo = next(iter(_indexed(holder)))
    assert test_client.get(f"/api/photo/{photo}").status_code == 200  # the guard lets these by


def _indexed(holder) -> dict:
    from petsml.web.server import _indexed_files

    return _indexed_files(holder.current())
