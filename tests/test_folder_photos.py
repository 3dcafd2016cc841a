"""Your own image folder end to end: a ``data.source: folder`` project (its photos outside the
project, in ``data.folder``) registered with its neighbour index; ``pets similar`` prints paths
inside that folder that exist, and ``pets web`` (its own process, over loopback) serves those
photos' thumbnails, nothing outside the indexed photos, and its page shows them in a real
headless Chromium."""

from __future__ import annotations

import io
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from petsml.testing.project import tool_env
from tests.servers import free_port, start, stop, wait_http
from tests.tracking import FOLDER_CLASSES

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 240  # loading the model on a busy 2-core machine
ANSWER_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory):
    """(project, tracking URI, photos folder, registered model name)."""
    from petsml.config import load_params
    from tests.tracking import register_in_own_store

    root = tmp_path_factory.mktemp("own-photos")
    photos = root / "my-photos"
    project, uri, _ = register_in_own_store(root, photos)
    name = load_params(project / "params.yaml").registered_model_name
    return project, uri, photos.resolve(), name


@pytest.fixture(scope="module")
def web(folder_project, tmp_path_factory):
    """The base URL of ``pets web`` serving the folder project's champion."""
    project, uri, _, _ = folder_project
    port, log = free_port(), tmp_path_factory.mktemp("web") / "pets-web.log"
    command = [sys.executable, "-m", "petsml.cli", "web", "--port", str(port),
               "--tracking-uri", uri, "--params", "params.yaml", "--json"]  # fmt: skip
    env = {k: v for k, v in tool_env().items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    server = start(command, log, cwd=project, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/model", server, log, timeout_s=START_TIMEOUT_S)
        yield base, log
    finally:
        stop(server)


def _val_photo(project: Path, photos: Path) -> Path:
    return photos / pd.read_csv(project / "data" / "splits" / "val.csv")["file"][0]


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers["content-type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read()


def test_pets_similar_prints_paths_inside_the_folder_that_exist(
    folder_project, monkeypatch, capsys
):
    from petsml.cli import main

    project, uri, photos, name = folder_project
    photo = _val_photo(project, photos)
    monkeypatch.chdir(photos.parent)  # paths inside the current folder print relative to it
    argv = ["similar", str(photo), "-k", "4", "--tracking-uri", uri, "--model-name", name,
            "--params", str(project / "params.yaml")]  # fmt: skip
    main([*argv, "--json"])
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["error"] is None and len(row["neighbours"]) == 4
    first = row["neighbours"][0]
    assert first["distance"] < 1e-4 and first["path"] == f"my-photos/{first['file']}"
    for item in row["neighbours"]:
        path = (photos.parent / item["path"]).resolve()
        assert path.is_relative_to(photos) and path.is_file(), item
        assert item["breed"] in FOLDER_CLASSES
        assert not item["path"].startswith("data/raw")

    main(argv)  # the text table shows the same paths
    out = capsys.readouterr().out
    assert f"  my-photos/{first['file']}" in out


def test_the_web_server_serves_the_folders_photos_as_thumbnails_and_nothing_else(
    folder_project, web
):
    from petsml.web.server import _thumbnail

    project, _, photos, _ = folder_project
    base, log = web
    (started,) = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
    assert started["url"] == f"{base}/" and started["version"] == "1"  # --json: one object
    photo = _val_photo(project, photos)
    request = urllib.request.Request(f"{base}/api/predict", data=photo.read_bytes())
    with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT_S) as response:
        answer = json.loads(response.read())
    neighbours = answer["neighbours"]
    assert len(neighbours) == 8 and neighbours[0]["distance"] < 1e-4, answer
    for item in neighbours:
        status, kind, body = _get(base + item["thumb"])
        assert status == 200 and kind == "image/jpeg", (item, body[:300])
        assert body == _thumbnail(photos / item["file"]), item  # that photo, from the folder
        assert max(Image.open(io.BytesIO(body)).size) <= 160
    # only indexed photos: never a path out of the folder, never a file beside the photos
    outside = (photos.parent / "secret.jpg").resolve()
    outside.write_bytes(photo.read_bytes())
    for escape in ("..%2Fsecret.jpg", "../secret.jpg", "%2E%2E/%2E%2E/project/params.yaml",
                   f"{FOLDER_CLASSES[0]}/..%2F..%2Fsecret.jpg", str(outside).lstrip("/"),
                   "not-indexed.jpg"):  # fmt: skip
        status, _, body = _get(f"{base}/api/photo/{escape}")
        assert status == 404, (escape, body[:300])


def test_the_page_shows_similar_thumbnails_from_the_folder_in_a_browser(folder_project, web):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from petsml.testing.browser import browser_paths, chromium

    paths = browser_paths("folder-source web page browser test")
    project, _, photos, _ = folder_project
    base, log = web
    with chromium(paths, "1300,1000") as browser:
        browser.get(base)
        wait = WebDriverWait(browser, ANSWER_TIMEOUT_S, poll_frequency=0.3)
        browser.find_element(By.ID, "file").send_keys(str(_val_photo(project, photos)))

        def loaded(driver):
            images = driver.find_elements(By.CSS_SELECTOR, "#neighbours img")
            ready = driver.execute_script(
                "const i = [...document.querySelectorAll('#neighbours img')];"
                "return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0)"
            )
            return ready and images

        images = wait.until(loaded, message=f"no loaded thumbnails; server log: {log}")
        assert len(images) == 8
        sources = [image.get_attribute("src") for image in images]
        assert all(src.startswith(f"{base}/api/photo/") for src in sources), sources
        assert any(f"/api/photo/{c}/" in src for src in sources for c in FOLDER_CLASSES)
        titles = {image.get_attribute("title") for image in images}
        assert all((photos / title).is_file() for title in titles), titles
