"""The download tests' loopback mirror and checks, shared by tests/test_download.py and
tests/test_archive_safety.py; its fixtures reach them as a plugin of tests/conftest.py."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from petsml.data import transfer as download  # CHUNK_BYTES, time: the HTTP transfer
from petsml.testing.fakedata import make_dataset, pack_archives

FAST = {"retries": 3, "timeout_s": 5, "backoff_s": 0.001}


@pytest.fixture
def small_chunks(monkeypatch):
    """The fake archives are ~70 kB; smaller chunks let a cut transfer keep some bytes."""
    monkeypatch.setattr(download, "CHUNK_BYTES", 4096)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict[str, str], list[str]]:
    """A folder holding images.tar.gz and annotations.tar.gz, their md5 and the image files."""
    ds_root = tmp_path_factory.mktemp("dataset")
    make_dataset(ds_root, per_breed=6, test_per_breed=2)
    out = tmp_path_factory.mktemp("mirror")
    md5 = pack_archives(ds_root, out)
    names = sorted(p.name for p in (ds_root / "images").iterdir())
    return out, md5, names


@pytest.fixture
def work(tmp_path) -> tuple[Path, Path]:
    return tmp_path / "data" / "downloads", tmp_path / "data" / "raw"


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_extracted(raw: Path, names: list[str]) -> None:
    assert sorted(p.name for p in (raw / "images").iterdir()) == names
    assert (raw / "annotations" / "list.txt").is_file()
    assert (raw / "annotations" / "trainval.txt").is_file()
    assert not list(raw.parent.glob(".raw.*")), "temp extraction dir left behind"


def assert_nothing_left(downloads: Path, raw: Path, name: str = "images") -> None:
    assert not (downloads / f"{name}.tar.gz").exists()
    assert not (downloads / f"{name}.tar.gz.part").exists()
    assert not raw.exists()
    assert not list(raw.parent.glob(".raw.*"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
