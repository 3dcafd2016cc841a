"""Headless Chromium for the browser tests: Debian's ``chromium`` + ``chromium-driver`` driven
by Selenium, on loopback servers started on free ports. Without a browser a test skips and
prints why (and the fix)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def browser_paths(what: str) -> tuple[str, str]:
    """(chromium, chromedriver) paths, or skip ``what`` with the reason and the fix."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        reason = "selenium is not installed (pip install -e '.[dev]')"
    else:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        if chromium and driver:
            return chromium, driver
        reason = "no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)"
    print(f"SKIP {what}: {reason}", file=sys.stderr)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until ``url`` answers; fails with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited ({server.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not answering after {timeout_s}s:\n{log.read_text()}")


@contextmanager
def chromium(paths: tuple[str, str], size: str = "1600,1000") -> Iterator:
    """A headless Chromium WebDriver, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={size}"):  # fmt: skip
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(paths[1]))
    try:
        yield browser
    finally:
        browser.quit()
