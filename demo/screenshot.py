"""docs/web-page.png: the web page on the demo's champion, answering one of the demo's test
photos, taken with the browser test's headless Chromium (tests/browser.py).

    python demo/run.py --no-serve && python demo/screenshot.py [--photo ID] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from petsml.testing.browser import browser_paths, chromium, free_port, wait_http  # noqa: E402

PROJECT = ROOT / ".demo" / "project"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photo", default="Bengal_107", help="a demo test photo's id")
    parser.add_argument("--out", default=str(ROOT / "docs" / "web-page.png"))
    args = parser.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not (PROJECT / "reports" / "registry.json").is_file():
        sys.exit(f"{PROJECT}: no registered demo model; run `python demo/run.py --no-serve`")
    port = free_port()
    log = PROJECT / "web-screenshot.log"
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "petsml.cli", "web", "--port", str(port)],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/model", server, log, 300)
        with chromium(browser_paths("screenshot"), "1200,900") as browser:
            browser.get(base)
            photo = ROOT / "demo" / "pets" / "images" / f"{args.photo}.jpg"
            browser.find_element(By.ID, "file").send_keys(str(photo))
            loaded = (
                "const i = [...document.querySelectorAll('#neighbours img')];"
                "return i.length > 0 && i.every(x => x.complete && x.naturalWidth > 0)"
            )
            WebDriverWait(browser, 120).until(lambda b: b.execute_script(loaded))
            browser.save_screenshot(args.out)
        print(f"screenshot: {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
