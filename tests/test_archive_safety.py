"""What an archive may not do: escape the tree, link out, be an HTML login page, or be no
archive at all. Each is refused before anything reaches data/raw, naming the fix."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from petsml.data.download import (
    ArchiveError,
    DownloadError,
    UnsafeArchiveError,
    fetch_dataset,
    safe_extract,
)
from petsml.testing.fakedata import MirrorServer, make_dataset, pack_archives
from tests.download_data import FAST

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("small_chunks")]


def test_member_escaping_the_tree_is_refused(work, tmp_path):
    downloads, raw = work
    ds_root = tmp_path / "evil_ds"
    make_dataset(ds_root, per_breed=2, test_per_breed=1, quirks=False)
    evil = tmp_path / "evil_mirror"
    md5 = pack_archives(ds_root, evil, extra_members={"../evil.txt": b"pwned"})
    with pytest.raises(UnsafeArchiveError) as info:
        fetch_dataset(str(evil), md5, downloads, raw, **FAST)
    assert "images.tar.gz" in str(info.value) and "../evil.txt" in str(info.value)
    assert [p for p in tmp_path.rglob("evil.txt")] == []
    assert not raw.exists() and not list(raw.parent.glob(".raw.*"))


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("images/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return archive


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("images/../../evil.txt"),
        tarfile.TarInfo("/tmp/evil.txt"),
        _symlink("images/link", "../../outside"),
        _symlink("images/link", "/etc/passwd"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute"],
)
def test_safe_extract_refuses_unsafe_members(tmp_path, member):
    archive = _tar_with(tmp_path, member, b"pwned" if member.isreg() else b"")
    dest = tmp_path / "out" / "dest"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    assert str(archive) in str(info.value) and member.name in str(info.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not (dest / "images" / "link").exists()


def test_corrupt_archive_is_an_archive_error(tmp_path):
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ArchiveError, match="images.tar.gz"):
        safe_extract(archive, tmp_path / "dest")


LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in - Campus Network</title></head>"
    b"<body><form>...</form></body></html>\n" * 20
)


@pytest.fixture
def html_mirror(mirror, tmp_path):
    """A mirror answering `images.tar.gz` with a login page (HTTP 200, text/html), as captive
    portals and moved download pages do; `annotations.tar.gz` is real."""
    folder = tmp_path / "portal"
    folder.mkdir()
    (folder / "images.tar.gz").write_bytes(LOGIN_PAGE)
    shutil.copy(mirror[0] / "annotations.tar.gz", folder)
    types = {"images.tar.gz": "text/html; charset=utf-8"}
    with MirrorServer(folder, content_types=types) as server:
        yield server


def test_an_html_page_served_as_the_archive_is_named_and_no_md5_is_suggested(
    mirror, work, html_mirror
):
    _, md5, _ = mirror
    downloads, raw = work
    with pytest.raises(DownloadError) as info:
        fetch_dataset(html_mirror.url, md5, downloads, raw, **FAST)
    message = str(info.value)
    assert "this is an HTML page (title 'Sign in - Campus Network'), not a gzip archive" in message
    assert "the server answered HTTP 200 OK, Content-Type text/html" in message, message
    page_md5 = hashlib.md5(LOGIN_PAGE).hexdigest()
    assert page_md5 not in message and "set data.md5" not in message, message
    kept = downloads / "images.not-an-archive"
    assert str(kept) in message and kept.read_bytes() == LOGIN_PAGE  # there to look at
    assert not list(downloads.glob("images.md5-*")) and not raw.exists()


def test_an_md5_adopted_from_an_html_page_is_refused_before_extraction(mirror, work, html_mirror):
    """The old first message suggested adopting the page's md5; done, tarfile said "truncated
    header". Now the page is named for what it is, with the md5 that let it through."""
    _, md5, _ = mirror
    downloads, raw = work
    adopted = dict(md5, images=hashlib.md5(LOGIN_PAGE).hexdigest())
    with pytest.raises(ArchiveError) as info:
        fetch_dataset(html_mirror.url, adopted, downloads, raw, **FAST)
    message = str(info.value)
    assert "this is an HTML page (title 'Sign in - Campus Network'), not a gzip archive" in message
    assert "data.md5.images" in message and "truncated" not in message, message
    assert not raw.exists()


def test_safe_extract_names_what_a_non_archive_is(tmp_path):
    page = tmp_path / "images.tar.gz"
    page.write_bytes(LOGIN_PAGE)
    with pytest.raises(ArchiveError, match="this is an HTML page .*not a gzip archive"):
        safe_extract(page, tmp_path / "out")
    page.write_bytes(b"")
    with pytest.raises(ArchiveError, match="this is an empty file, not a gzip archive"):
        safe_extract(page, tmp_path / "out")
