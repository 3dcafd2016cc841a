"""The web page as a person uses it, in a real headless Chromium: ``pets web`` runs as its own
process on a free loopback port over a registered model (the session's ``registered_project``);
the test picks a real Oxford-IIIT Pet photo, waits for the answer, checks the breed, the top-5
bars and the similar photos' thumbnails, then picks a text file and checks the message, then
opens the models view (versions with aliases, the last run's strategies).

Set ``PETS_WEB_SCREENSHOT=<file.png>`` to keep the answer's screenshot as well (the README's
picture, docs/web-page.png, is made by ``demo/screenshot.py``, on the demo's real model).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from petsml.catalog import metrics as metrics_catalog
from tests.servers import pets_web_in_chromium

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "pets-sample"
START_TIMEOUT_S = 240  # loading the model on a busy 2-core CI machine
ANSWER_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def web(registered_project, tmp_path_factory):
    """(browser, base URL, log) of ``pets web`` serving the registered champion."""
    project, uri, _ = registered_project
    log = tmp_path_factory.mktemp("web") / "pets-web.log"
    what = "web page browser test"
    with pets_web_in_chromium(project, uri, log, what, START_TIMEOUT_S) as (browser, base):
        yield browser, base, log


def _real_photo() -> Path:
    photos = sorted((SAMPLE / "images").glob("*.jpg")) if SAMPLE.is_dir() else []
    if not photos:
        reason = f"no real photos in {SAMPLE} (the Oxford-IIIT Pet sample folder)"
        print(f"SKIP web page browser test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return next((p for p in photos if p.stem.startswith("Bengal")), photos[0])


def test_a_person_uploads_a_photo_sees_breed_bars_and_similar_photos_then_a_text_file(
    web, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from petsml.data.breeds import BREEDS

    browser, base, log = web
    photo = _real_photo()
    browser.get(base)
    wait = WebDriverWait(browser, ANSWER_TIMEOUT_S, poll_frequency=0.3)
    wait.until(
        lambda b: "oxford-pets-breed v1 @champion" in b.find_element(By.ID, "model-line").text,
        message="the page never named the model",
    )

    browser.find_element(By.ID, "file").send_keys(str(photo))

    def answered(driver):
        thumbs = driver.find_elements(By.CSS_SELECTOR, "#neighbours img")
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('#neighbours img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        shown = driver.find_element(By.ID, "result").is_displayed()
        return shown and len(thumbs) == 8 and loaded and thumbs

    wait.until(answered, message=f"no answer with 8 loaded thumbnails; server log: {log}")
    breed = browser.find_element(By.ID, "breed").text
    assert breed.replace(" ", "_").lower() in {b.lower() for b in BREEDS}
    bars = browser.find_elements(By.CSS_SELECTOR, "#top5 li")
    assert len(bars) == 5 and all("%" in bar.text for bar in bars)
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#neighbours .nb-breed")]
    assert len(captions) == 8 and all(c.replace(" ", "_") in BREEDS for c in captions)
    line = browser.find_element(By.ID, "model-line").text
    assert "answered by oxford-pets-breed v1 @champion" in line
    assert "feature_extractor" in line and "test accuracy 0.580" in line
    shot = tmp_path / "web-page.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("PETS_WEB_SCREENSHOT"):
        browser.save_screenshot(os.environ["PETS_WEB_SCREENSHOT"])
    print(f"screenshot: {shot}")

    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo\n")
    browser.find_element(By.ID, "file").send_keys(str(text))
    error = wait.until(
        lambda b: b.find_element(By.ID, "error").is_displayed() and b.find_element(By.ID, "error"),
        message="no error message for a text file",
    )
    assert error.text == "notes.txt: not an image file (JPEG, PNG, ...)"
    assert not browser.find_element(By.ID, "result").is_displayed()
    browser.save_screenshot(str(tmp_path / "web-page-error.png"))

    # the second view: the registered versions and the last run's strategies
    browser.find_element(By.ID, "tab-models").click()
    champion = wait.until(
        lambda b: [r for r in b.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
                   if "@champion" in r.text],
        message="the models view never listed the champion",
    )  # fmt: skip
    assert champion[0].text.split()[0] == "1" and "feature_extractor" in champion[0].text
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#versions thead th")]
    tagged = [row.key for row in metrics_catalog.rows() if row.tag]  # the metrics registry's
    assert headers == ["version", "aliases", "strategy", "backbone", *tagged, "gate"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#comparison tbody tr")
    strategies = {r.text.split()[0] for r in rows}
    assert strategies == {"feature_extractor", "finetune_top"}
    assert len(browser.find_elements(By.CSS_SELECTOR, "#comparison-plot .row")) == 2
