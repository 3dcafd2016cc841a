"""Continuous training on your own photos: the scheduled deployment's flow over an image folder.

The ``weekly-retrain`` deployment (prefect.yaml) runs ``pipelines.train:train_pipeline`` with no
parameters in the checkout. With ``data.source: folder`` the folder is a DVC dep, so photos
added between two runs are picked up by the next one: it retrains what changed, registers a new
version and the gate records its verdict. Real DVC, MLflow and Prefect (a temporary server), on
tiny generated photos with timm's tiny test network and the cheapest strategy. The runs skip
the final `dvc exp save` (``save_exp=False``): what is checked here is what DVC re-ran and what
the registry and gate recorded; recording a flow run as a DVC experiment is test_flows' and
test_work_pool's.
"""

from __future__ import annotations

import json

import pytest
import yaml

from petsml.testing.fakedata import make_image_folder
from petsml.testing.project import changed_stages, make_project
from pipelines.train import train_pipeline

pytestmark = [pytest.mark.slow(seconds=230), pytest.mark.integration]

CLASSES = ("circle", "square", "zebra")
TEST_LIST = "test.txt"  # fixed test images: the gate compares every version on the same ones


def _statuses(result: dict) -> dict[str, str]:
    return {row["stage"]: row["status"] for row in result["stages"]}


def test_photos_added_to_the_folder_are_picked_up_and_gated(prefect_server, tmp_path):
    photos = tmp_path / "shapes"
    make_image_folder(photos, CLASSES, per_class=6, size=(44, 44))
    (photos / TEST_LIST).write_text("".join(f"{c}/000.jpg\n{c}/001.jpg\n" for c in CLASSES))
    project = make_project(
        tmp_path / "p",
        {
            "data.source": "folder",
            "data.folder": str(photos),
            "data.test_list": TEST_LIST,
            "decode.size": 40,
            "decode.workers": 1,
            "model.backbone": "test_efficientnet",  # timm's tiny network, random init
            "model.pretrained": False,
            "model.image_size": 32,
            "train.strategies": ["feature_extractor"],
            "advise.backbones": [],
            "features.batch_size": 32,
            "compare.latency_budget_s": 0.3,  # its columns are checked elsewhere, not here
        },
    )
    first = train_pipeline(project_dir=str(project), retry_delay_s=0, save_exp=False)
    assert first["registry"]["model_name"] == "oxford-pets-shapes"
    assert (first["registry"]["version"], first["registry"]["decision"]) == ("1", "champion")
    assert _statuses(first)["download"] == "ran"  # a note only: nothing is downloaded

    make_image_folder(photos, CLASSES, per_class=3, size=(44, 44), start=6)  # new photos
    stale = changed_stages(project)
    assert {"manifest", "decode"} <= stale and not stale & {"params", "download"}

    second = train_pipeline(project_dir=str(project), retry_delay_s=0, save_exp=False)
    statuses = _statuses(second)
    assert statuses["download"] == "skipped"
    assert all(statuses[s] == "ran" for s in ("manifest", "split", "train@feature_extractor"))
    report = second["registry"]
    assert report["version"] == "2" and report["decision"] in ("promoted", "rejected")
    assert report["comparison"]["n"] == 2 * len(CLASSES)  # the same six test images
    trainval = {
        name: (project / f"data/splits/{name}.csv").read_text() for name in ("train", "val")
    }
    assert all(any(f"{c}/008.jpg" in text for text in trainval.values()) for c in CLASSES)

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version("oxford-pets-shapes", "2")
    assert version.tags["gate.decision"] == report["decision"]
    assert version.tags["gate.reason"] == report["reason"]
    assert json.loads((project / "reports/registry.json").read_text())["version"] == "2"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    folder = next(d for d in lock["stages"]["manifest"]["deps"] if d["path"] == str(photos))
    assert client.get_run(version.run_id).data.tags["dvc_raw_hash"] == folder["md5"]
