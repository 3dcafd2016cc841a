"""The loop from serving back to training, on a tracked and registered project of its own: the
version carries its reference, answers are recorded with an id (never the photo unless kept),
a failing store costs no answer, `pets monitor` flags only the shifted window and logs it
against the version, feedback from the command line and the web page is checked and counted,
and kept feedback photos export into the folder layout training reads.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.cli import run_pets
from tests.loop import NAME, VAL, loop_project, recording_model, shifted, val_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A registered project (champion v1) whose params keep photos and judge small windows."""
    return loop_project(tmp_path_factory.mktemp("loop"))


def _store(project):
    from petsml.monitoring.store import open_store
    from petsml.tracking.monitor_config import project_settings

    settings = project_settings(project / "params.yaml")
    return open_store(settings.store, settings)


def _common(project, uri):
    return ["--params", str(project / "params.yaml"), "--tracking-uri", uri]


def test_the_registered_version_carries_its_reference_from_the_cached_outputs(project):
    from petsml.tracking.reference_files import load_reference
    from tests.tracking import tracking_from

    project, uri = project
    with tracking_from(project, uri):
        reference = load_reference(f"models:/{NAME}@champion")
    files = val_files(project)
    assert len(reference) == len(files) == VAL
    # the head on the cached embeddings is what the served model answers for the same photos
    plain = recording_model(project, uri, record=False)
    answers = plain.predict(pd.DataFrame({"image": files[:4]}))
    served = [row["probability"] for _, row in answers.iterrows()]
    cached = reference.sample.probabilities[:4].max(axis=1)
    np.testing.assert_allclose(served, cached, atol=1e-4)


def test_answers_are_recorded_with_an_id_and_a_bad_row_or_store_costs_no_answer(project, tmp_path):

    project, uri = project
    files = val_files(project)[:3]
    broken = recording_model(project, uri, store=str(tmp_path))  # a folder: no store opens
    answers = broken.predict(pd.DataFrame({"image": files}))
    assert answers["label"].notna().all() and "prediction_id" not in answers.columns
    separate = tmp_path / "records.sqlite"
    model = recording_model(project, uri, store=str(separate), keep_photos=False)
    answers = model.predict(pd.DataFrame({"image": [*files, "bm90IGEgcGhvdG8="]}))
    ids = answers["prediction_id"].tolist()
    assert all(ids[:3]) and not ids[3] and answers["error"].iloc[3]
    from petsml.monitoring.store import open_store
    from petsml.tracking.monitor_config import project_settings

    settings = project_settings(project / "params.yaml").replace(store=str(separate))
    with open_store(str(separate), settings) as store:
        assert sorted(store.ids()) == sorted(ids[:3])
        window = store.window()
        assert window.model_name == NAME and window.model_version == "1"
        assert window.sample.embeddings.shape[0] == 3 and window.sample.embeddings.shape[1] > 0
        assert all(store.photo(i) is None for i in ids[:3])  # keep_photos false: no photo


def test_monitor_log_off_records_nothing_even_when_a_loader_asks(project, tmp_path):
    from petsml.tracking.alias_model import load_alias_model
    from petsml.tracking.model_registry import ModelRegistry
    from petsml.tracking.monitor_config import loader_config

    project, uri = project
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["monitor"].update(log=False, store=str(tmp_path / "never.sqlite"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    config = loader_config(True, "predict", tmp_path / "params.yaml")  # as --record asks
    model = load_alias_model(ModelRegistry(NAME, uri), "champion", {"allow_paths": True},
                             record=config).model  # fmt: skip
    answers = model.predict(pd.DataFrame({"image": val_files(project)[:2]}))
    assert answers["label"].notna().all() and "prediction_id" not in answers.columns
    assert not (tmp_path / "never.sqlite").exists()


def test_monitor_flags_only_the_shifted_window_and_counts_feedback(project, capsys, tmp_path):
    from tests.tracking import tracking_from

    project, uri = project
    files = val_files(project)
    model = recording_model(project, uri)
    plain = model.predict(pd.DataFrame({"image": files}))
    code, out, err = run_pets(["monitor", "--json", *_common(project, uri)], capsys)
    assert code == 0, err
    found = json.loads(out)
    assert found["verdict"] == "ok" and found["version"] == "1"
    assert found["files"]["html"].endswith(".html")

    # feedback from the command line: checked, stored, counted for the version
    first = plain["prediction_id"].iloc[0]
    other = next(c for c in model.unwrap_python_model().class_names if c != plain["label"].iloc[0])
    code, out, err = run_pets(["feedback", first, other, "--json", *_common(project, uri)], capsys)
    assert code == 0, err
    assert json.loads(out) == {"prediction_id": first, "label": other,
                               "predicted": plain["label"].iloc[0], "correct": False,
                               "model": NAME, "model_version": "1"}  # fmt: skip
    code, _, err = run_pets(["feedback", "no-such-id", other, *_common(project, uri)], capsys)
    assert code == 1 and "no prediction 'no-such-id'" in err
    code, _, err = run_pets(["feedback", first, "labrador", *_common(project, uri)], capsys)
    assert code == 1 and "not a class of the model" in err

    moved = model.predict(pd.DataFrame({"image": [shifted(f) for f in files]}))
    assert moved["prediction_id"].notna().all()
    code, out, err = run_pets(["monitor", "--json", *_common(project, uri)], capsys)
    assert code == 3, (out, err)
    found = json.loads(out)
    assert found["verdict"] == "drift"
    assert [row["n"] for row in found["feedback"] if row["model_version"] == "1"] == [1]
    with tracking_from(project, uri):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version(NAME, "1")
        assert version.tags["monitor.verdict"] == "drift"
        run = client.get_run(version.tags["monitor.run_id"])
        assert run.data.tags["monitor.model_version"] == "1"
        logged = {f.path for f in client.list_artifacts(run.info.run_id, "monitoring")}
        assert {p.rsplit(".", 1)[1] for p in logged} == {"json", "html"}

    # kept feedback photos become training photos in the data.source: folder layout
    code, out, err = run_pets(["feedback", "--export", str(tmp_path / "new"), "--json",
                            *_common(project, uri)], capsys)  # fmt: skip
    assert code == 0, err
    written = sorted((tmp_path / "new").rglob("*.*"))
    assert [p.parent.name for p in written] == [other]
    assert written[0].read_bytes() == open(files[0], "rb").read()


def test_the_web_page_takes_feedback_and_refuses_unknown_ids_and_classes(project):
    from fastapi.testclient import TestClient

    from petsml.web.server import create_app

    project, uri = project
    app = create_app(NAME, uri, params_path=project / "params.yaml", project_root=project)
    with TestClient(app) as client:
        answer = client.post("/api/predict", content=open(val_files(project)[1], "rb").read())
        prediction_id = answer.json()["prediction_id"]
        classes = client.get("/api/classes").json()["classes"]
        assert len(classes) == 37 and answer.json()["label"] in classes
        label = next(c for c in classes if c != answer.json()["label"])
        given = client.post("/api/feedback", json={"prediction_id": prediction_id, "label": label})
        assert given.status_code == 200 and given.json()["correct"] is False
        unknown = client.post("/api/feedback", json={"prediction_id": "nope", "label": label})
        assert unknown.status_code == 404 and "no prediction 'nope'" in unknown.json()["error"]
        typo = client.post("/api/feedback", json={"prediction_id": prediction_id, "label": "x"})
        assert typo.status_code == 400 and "not a class" in typo.json()["error"]
        missing = client.post("/api/feedback", json={"prediction_id": prediction_id})
        assert missing.status_code == 400 and "needs label" in missing.json()["error"]
        # the data's likely label errors, each with a thumbnail the page can load
        _label_issues(project)
        (cell,) = client.get("/api/data_issues").json()["label_issues"]
        assert (cell["given_name"], cell["suggested_name"]) == ("Abyssinian", "beagle")
        assert client.get(cell["thumb"]).headers["content-type"] == "image/jpeg"
        assert client.get("/api/data_issues?limit=0").status_code == 400
    with _store(project) as store:
        assert any(f.prediction_id == prediction_id and f.source == "web"
                   for f in store.feedback())  # fmt: skip


def test_pets_predict_records_only_when_asked(project, capsys):
    project, uri = project
    photo = val_files(project)[3]
    code, out, err = run_pets(["predict", photo, "--json", *_common(project, uri)], capsys)
    assert code == 0, err
    assert "prediction_id" not in json.loads(out)
    code, out, err = run_pets(
        ["predict", photo, "--record", "--json", *_common(project, uri)], capsys
    )
    assert code == 0, err
    prediction_id = json.loads(out)["prediction_id"]
    with _store(project) as store:
        window = store.window(last=1)
        assert list(window.ids) == [prediction_id]


@pytest.fixture
def web_page(project, tmp_path):
    """(browser, base URL, log) of ``pets web`` on the loop project, in headless Chromium."""
    from tests.servers import pets_web_in_chromium

    project, uri = project
    log = tmp_path / "pets-web.log"
    with pets_web_in_chromium(project, uri, log, "web page feedback test") as (browser, base):
        yield browser, base, log


def _label_issues(project) -> None:
    """A data_issues stage's label_issues.csv naming one training photo."""
    from petsml import paths
    from petsml.data_issues.grid import GRID_KEYS

    row = dict(rank=1, image_id="Abyssinian_1", split="train", given=0, given_name="Abyssinian",
               suggested=4, suggested_name="beagle", self_confidence=0.02,
               excluded=False)  # fmt: skip
    (project / paths.DATA_ISSUES).mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row], columns=list(GRID_KEYS)).to_csv(project / paths.LABEL_ISSUES, index=False)


def test_feedback_from_the_web_page_is_counted_by_pets_monitor(project, web_page, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser, base, log = web_page
    project_dir, uri = project

    def counted() -> int:
        code, out, err = run_pets(["monitor", "--json", *_common(project_dir, uri)], capsys)
        assert code in (0, 3), err
        return sum(r["n"] for r in json.loads(out)["feedback"] if r["model_version"] == "1")

    before = counted()
    browser.get(base)
    wait = WebDriverWait(browser, 120, poll_frequency=0.3)
    browser.find_element(By.ID, "file").send_keys(val_files(project_dir)[2])
    form = wait.until(
        lambda b: (
            b.find_element(By.ID, "feedback").is_displayed() and b.find_element(By.ID, "feedback")
        ),
        message=f"no feedback form; server log {log}",
    )
    choice = Select(browser.find_element(By.ID, "feedback-label"))
    # every class but the answer's
    wait.until(lambda b: len(choice.options) == 36, message="the class list never came")
    choice.select_by_index(0)
    form.find_element(By.ID, "feedback-send").click()
    status = wait.until(lambda b: b.find_element(By.ID, "feedback-status").text,
                        message="the feedback was never acknowledged")  # fmt: skip
    assert status.startswith("Thanks: recorded as"), status
    assert counted() == before + 1

    # the models view shows the data's likely label errors: thumbnail, given and suggested label
    _label_issues(project_dir)
    browser.find_element(By.ID, "tab-models").click()
    cell = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#label-issues li"),
                      message="no label-issue grid")[0]  # fmt: skip
    assert "given: Abyssinian" in cell.text and "suggested: beagle" in cell.text
    loaded = "const i = document.querySelector('#label-issues img'); return i.naturalWidth > 0"
    wait.until(lambda b: b.execute_script(loaded), message="the thumbnail never loaded")
