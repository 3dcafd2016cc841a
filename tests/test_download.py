"""The download stage against a real loopback mirror: resume, retry, verify, extract safely."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import tarfile
from pathlib import Path

import pytest
import yaml

from petsml.data import transfer as download  # CHUNK_BYTES, time: the HTTP transfer
from petsml.data.download import (
    ARCHIVES,
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_archive,
    fetch_dataset,
    safe_extract,
)
from petsml.errors import PetsError
from petsml.testing.fakedata import MirrorServer, make_dataset, pack_archives
from petsml.testing.project import dvc, fake_data_params, make_project, set_params

pytestmark = [pytest.mark.slow(seconds=40), pytest.mark.integration]

FAST = {"retries": 3, "timeout_s": 5, "backoff_s": 0.001}


@pytest.fixture(autouse=True)
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


def test_http_happy_path_downloads_verifies_and_extracts(mirror, work, capsys):
    folder, md5, names = mirror
    downloads, raw = work
    with MirrorServer(folder) as server:
        assert fetch_dataset(server.url, md5, downloads, raw, **FAST) == raw
    assert server.requests == [("/images.tar.gz", None), ("/annotations.tar.gz", None)]
    for name in ARCHIVES:
        assert md5_of(downloads / f"{name}.tar.gz") == md5[name]
        assert not (downloads / f"{name}.tar.gz.part").exists()
    assert_extracted(raw, names)
    assert "images.tar.gz" in capsys.readouterr().err  # the tqdm bar went to stderr


def test_cut_connection_resumes_with_range(mirror, work):
    folder, md5, names = mirror
    downloads, raw = work
    half = (folder / "images.tar.gz").stat().st_size // 2
    with MirrorServer(folder, cut_after={"images.tar.gz": half}) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    image_requests = [r for r in server.requests if r[0] == "/images.tar.gz"]
    assert len(image_requests) == 2 and image_requests[0] == ("/images.tar.gz", None)
    resumed_at = int(image_requests[1][1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= half  # what arrived before the cut was kept, not fetched again
    assert md5_of(downloads / "images.tar.gz") == md5["images"]
    assert_extracted(raw, names)


def test_server_ignoring_range_restarts_from_zero(mirror, work):
    folder, md5, names = mirror
    downloads, raw = work
    half = (folder / "images.tar.gz").stat().st_size // 2
    with MirrorServer(folder, ranges=False, cut_after={"images.tar.gz": half}) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    image_requests = [r for r in server.requests if r[0] == "/images.tar.gz"]
    # We asked to resume, got the whole file (200) and must not have appended it to the part.
    assert len(image_requests) == 2 and (image_requests[1][1] or "").startswith("bytes=")
    assert md5_of(downloads / "images.tar.gz") == md5["images"]
    assert_extracted(raw, names)


def test_complete_partial_file_gets_416_and_is_kept(mirror, work):
    folder, md5, _ = mirror
    downloads, _ = work
    downloads.mkdir(parents=True)
    size = (folder / "images.tar.gz").stat().st_size
    shutil.copy(folder / "images.tar.gz", downloads / "images.tar.gz.part")
    with MirrorServer(folder) as server:
        download_archive(
            f"{server.url}/images.tar.gz", downloads / "images.tar.gz", md5["images"], **FAST
        )
    assert server.requests == [("/images.tar.gz", f"bytes={size}-")]
    assert md5_of(downloads / "images.tar.gz") == md5["images"]


def test_stale_partial_file_is_discarded_and_fetched_afresh(mirror, work):
    folder, md5, _ = mirror
    downloads, _ = work
    downloads.mkdir(parents=True)
    (downloads / "images.tar.gz.part").write_bytes(b"x" * 100)  # from some other file
    with MirrorServer(folder) as server:
        download_archive(
            f"{server.url}/images.tar.gz", downloads / "images.tar.gz", md5["images"], **FAST
        )
    assert server.requests == [("/images.tar.gz", "bytes=100-"), ("/images.tar.gz", None)]
    assert md5_of(downloads / "images.tar.gz") == md5["images"]


def test_503s_are_retried_with_exponential_backoff(mirror, work, monkeypatch):
    folder, md5, names = mirror
    downloads, raw = work
    delays: list[float] = []
    monkeypatch.setattr(download.time, "sleep", delays.append)
    with MirrorServer(folder, fail_first=2) as server:
        fetch_dataset(server.url, md5, downloads, raw, retries=2, timeout_s=5, backoff_s=0.5)
    assert [r[0] for r in server.requests].count("/images.tar.gz") == 3
    assert delays == [0.5, 1.0]
    assert_extracted(raw, names)


def test_503s_beyond_the_retry_budget_fail_with_hint(mirror, work):
    folder, md5, _ = mirror
    downloads, raw = work
    with MirrorServer(folder, fail_first=10) as server:
        with pytest.raises(DownloadError, match="503") as info:
            fetch_dataset(server.url, md5, downloads, raw, **FAST)
    assert len(server.requests) == FAST["retries"] + 1
    assert "data.base_url" in str(info.value)
    assert_nothing_left(downloads, raw)


def test_404_is_not_retried_and_names_the_url(mirror, work, tmp_path):
    _, md5, _ = mirror
    downloads, raw = work
    empty = tmp_path / "empty"
    empty.mkdir()
    with MirrorServer(empty) as server:
        with pytest.raises(DownloadError, match="404") as info:
            fetch_dataset(server.url, md5, downloads, raw, **FAST)
    assert f"{server.url}/images.tar.gz" in str(info.value)
    assert server.requests == [("/images.tar.gz", None)]
    assert not raw.exists()


def assert_kept_aside(downloads: Path, raw: Path, name: str, md5: str) -> None:
    """The archive is not where the pipeline reads it, but kept under its md5, intact."""
    assert not (downloads / f"{name}.tar.gz").exists()
    assert not (downloads / f"{name}.tar.gz.part").exists()
    assert md5_of(downloads / f"{name}.md5-{md5}.tar.gz") == md5
    assert not raw.exists() and not list(raw.parent.glob(".raw.*"))


@pytest.mark.parametrize("bad", ARCHIVES)
def test_wrong_md5_fails_clearly_and_keeps_the_archive_aside(mirror, work, bad):
    folder, md5, _ = mirror
    downloads, raw = work
    wrong = dict(md5, **{bad: "0" * 32})
    with MirrorServer(folder) as server:
        with pytest.raises(ChecksumError) as info:
            fetch_dataset(server.url, wrong, downloads, raw, **FAST)
    message = str(info.value)
    kept = downloads / f"{bad}.md5-{md5[bad]}.tar.gz"
    for needle in (str(kept), "0" * 32, f"data.md5.{bad}: '{md5[bad]}'", "params.yaml"):
        assert needle in message
    assert "data.base_url" in message
    assert_kept_aside(downloads, raw, bad, md5[bad])


def test_mistyped_md5_keeps_the_good_archive_and_fixing_it_needs_no_download(mirror, work):
    """A good run, then a typo in data.md5.images, then the typo fixed."""
    folder, md5, names = mirror
    downloads, raw = work
    with MirrorServer(folder) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    shutil.rmtree(raw)  # as DVC removes the stage's out before running it again
    typo = dict(md5, images="0" * 32)
    with MirrorServer(folder) as server:
        with pytest.raises(ChecksumError) as info:
            fetch_dataset(server.url, typo, downloads, raw, **FAST)
    assert server.requests == [("/images.tar.gz", None)]  # checked against the server once
    assert_kept_aside(downloads, raw, "images", md5["images"])
    message = str(info.value)
    kept = downloads / f"images.md5-{md5['images']}.tar.gz"
    assert f"the archive at {kept} has md5 {md5['images']}, params say {'0' * 32}" in message
    assert f"set data.md5.images: '{md5['images']}' in params.yaml" in message
    assert "most likely params.yaml is what is wrong" in message  # same bytes as the kept one
    with MirrorServer(folder) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    assert server.requests == []  # the kept archive came back, nothing was downloaded
    assert md5_of(downloads / "images.tar.gz") == md5["images"]
    assert sorted(p.name for p in downloads.iterdir()) == ["annotations.tar.gz", "images.tar.gz"]
    assert_extracted(raw, names)


def test_kept_aside_archive_that_changed_since_is_not_used(mirror, work):
    folder, md5, names = mirror
    downloads, raw = work
    downloads.mkdir(parents=True)
    shutil.copy(folder / "annotations.tar.gz", downloads / "annotations.tar.gz")
    damaged = downloads / f"images.md5-{md5['images']}.tar.gz"
    damaged.write_bytes(b"not the archive any more")
    really = hashlib.md5(b"not the archive any more").hexdigest()
    with MirrorServer(folder) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    assert server.requests == [("/images.tar.gz", None)]
    assert md5_of(downloads / "images.tar.gz") == md5["images"]
    # not deleted either: filed under the md5 it really has
    assert [p.name for p in downloads.glob("images.md5-*")] == [f"images.md5-{really}.tar.gz"]
    assert_extracted(raw, names)


def test_dvc_repro_with_a_mistyped_md5_keeps_the_archive(mirror, tmp_path):
    """The same scenario under the real `dvc repro download`, against the loopback mirror."""
    folder, md5, names = mirror
    with MirrorServer(folder) as server:
        project = make_project(tmp_path / "p", fake_data_params(server.url, md5))
        dvc(project, "repro", "download")
        good = project / "data/downloads/images.tar.gz"
        assert md5_of(good) == md5["images"]
        set_params(project, {"data.md5.images": "0" * 32})
        failed = dvc(project, "repro", "download", check=False)
        assert failed.returncode != 0
        kept = Path("data/downloads") / f"images.md5-{md5['images']}.tar.gz"
        assert f"set data.md5.images: '{md5['images']}'" in failed.stderr
        assert str(kept) in failed.stderr
        assert md5_of(project / kept) == md5["images"] and not good.exists()
        fetched = len(server.requests)
        set_params(project, {"data.md5.images": md5["images"]})
        dvc(project, "repro", "download")  # fixed back: DVC restores data/raw from its cache
        assert_extracted(project / "data/raw", names)
        forced = dvc(project, "repro", "--force", "download")  # the stage itself runs
        assert "restored from" in forced.stderr
        assert len(server.requests) == fetched  # neither run downloaded anything
    assert md5_of(good) == md5["images"] and not (project / kept).exists()
    assert_extracted(project / "data/raw", names)


def test_verified_archives_are_not_downloaded_again(mirror, work):
    folder, md5, names = mirror
    downloads, raw = work
    downloads.mkdir(parents=True)
    for name in ARCHIVES:
        shutil.copy(folder / f"{name}.tar.gz", downloads / f"{name}.tar.gz")
    with MirrorServer(folder) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    assert server.requests == []
    assert_extracted(raw, names)


def test_present_but_corrupt_archive_is_downloaded_again(mirror, work):
    folder, md5, names = mirror
    downloads, raw = work
    downloads.mkdir(parents=True)
    shutil.copy(folder / "annotations.tar.gz", downloads / "annotations.tar.gz")
    (downloads / "images.tar.gz").write_bytes(b"not the archive")
    with MirrorServer(folder) as server:
        fetch_dataset(server.url, md5, downloads, raw, **FAST)
    assert server.requests == [("/images.tar.gz", None)]
    assert md5_of(downloads / "images.tar.gz") == md5["images"]
    assert_extracted(raw, names)


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


def test_file_url_and_plain_directory_base_url(mirror, tmp_path, monkeypatch):
    folder, md5, names = mirror
    # file:// URL
    fetch_dataset(folder.as_uri(), md5, tmp_path / "a" / "dl", tmp_path / "a" / "raw", **FAST)
    assert_extracted(tmp_path / "a" / "raw", names)
    # absolute plain path
    fetch_dataset(str(folder), md5, tmp_path / "b" / "dl", tmp_path / "b" / "raw", **FAST)
    assert_extracted(tmp_path / "b" / "raw", names)
    # relative plain path, as `dvc exp run -S data.base_url=mirror` would give from the repo root
    shutil.copytree(folder, tmp_path / "c" / "mirror")
    monkeypatch.chdir(tmp_path / "c")
    fetch_dataset("mirror", md5, Path("data/downloads"), Path("data/raw"), **FAST)
    assert_extracted(tmp_path / "c" / "data" / "raw", names)
    assert md5_of(tmp_path / "c" / "data" / "downloads" / "images.tar.gz") == md5["images"]


def test_local_folder_with_wrong_md5_is_still_refused(mirror, work):
    folder, md5, _ = mirror
    downloads, raw = work
    with pytest.raises(ChecksumError):
        fetch_dataset(folder.as_uri(), dict(md5, images="f" * 32), downloads, raw, **FAST)
    assert_kept_aside(downloads, raw, "images", md5["images"])


def test_local_folder_missing_archive_names_path(tmp_path, work):
    downloads, raw = work
    with pytest.raises(DownloadError, match="images.tar.gz") as info:
        fetch_dataset(str(tmp_path / "nowhere"), dict.fromkeys(ARCHIVES, "0" * 32), downloads, raw)
    assert "data.base_url" in str(info.value)


def test_unreachable_mirror_fails_fast_with_mirror_hint(mirror, work, monkeypatch):
    """Fast by construction, not by the clock: a refused connection ends each attempt at once
    (no read timeout waited) and the only waits are the backoff's, as configured."""
    from petsml.data import transfer

    _, md5, _ = mirror
    downloads, raw = work
    waits: list[float] = []
    real_sleep = transfer.time.sleep
    monkeypatch.setattr(transfer.time, "sleep", lambda s: (waits.append(s), real_sleep(s)))
    with pytest.raises(DownloadError) as info:
        fetch_dataset(f"http://127.0.0.1:{closed_port()}", md5, downloads, raw, **FAST)
    monkeypatch.undo()
    assert waits == [transfer.backoff_delay(a, FAST["backoff_s"]) for a in range(len(waits))]
    assert len(waits) == FAST["retries"] and sum(waits) < 1, waits
    message = str(info.value)
    assert "refused" in message.lower(), message  # not a timeout: nothing was waited for
    assert "cannot reach" in message and "4 attempts" in message
    assert "dvc exp run -S data.base_url=file://" in message and "params.yaml" in message
    assert not raw.exists()


def test_stage_main_reads_params_and_fills_data_raw(mirror, tmp_path, monkeypatch):
    folder, md5, names = mirror
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["data"].update(base_url=folder.as_uri(), md5=md5, retries=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    from stages.download import main

    main()
    assert_extracted(tmp_path / "data" / "raw", names)
    assert (tmp_path / "data" / "downloads" / "images.tar.gz").is_file()


def test_errors_are_pets_errors():
    for cls in (DownloadError, ChecksumError, ArchiveError, UnsafeArchiveError):
        assert issubclass(cls, PetsError)
