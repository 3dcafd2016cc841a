"""Fetch and unpack the official Oxford-IIIT Pet archives, surviving a flaky or absent network.

The images archive is about 800 MB and the VGG server is slow and sometimes down, so a transfer
that breaks resumes with an HTTP ``Range`` request instead of starting over, transient failures
are retried with exponential backoff, and a mirror or a local folder can stand in for the server.
Nothing is trusted before its md5 matches ``params.yaml``: downloads land in ``<name>.part`` and
are renamed only once verified, and extraction goes through tarfile's ``data`` filter into a temp
directory that replaces ``data/raw`` only when both archives unpacked fully.

A complete archive whose md5 differs from ``params.yaml`` is never deleted: the md5 in params may
be the thing that is wrong (a typo, another release). It is kept aside as
``<name>.md5-<its md5>.tar.gz`` next to where it was, the error names it, and a later run whose
params ask for that md5 takes it back instead of downloading again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tarfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from tqdm import tqdm

from petsml.errors import PetsError
from petsml.io import atomic_dir

log = logging.getLogger(__name__)

ARCHIVES = ("images", "annotations")
# First retry waits this long, then twice as long each time (capped); tests make it tiny.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
# A dropped connection loses at most the chunk in flight, so keep it small.
CHUNK_BYTES = 1 << 16
PART_SUFFIX = ".part"

MIRROR_HINT = (
    "Point data.base_url at a mirror or at a local folder holding images.tar.gz and "
    "annotations.tar.gz, e.g. `dvc exp run -S data.base_url=file:///path/to/folder` "
    "(a plain path works too), or edit data.base_url in params.yaml."
)


class DownloadError(PetsError):
    """An archive could not be fetched; the message names the URL and how to get around it."""


class ChecksumError(DownloadError):
    """Fetched bytes do not match the md5 in params.yaml; the file is kept aside under its md5."""


class ArchiveError(PetsError):
    """A verified archive could not be unpacked (corrupt, or not the official layout)."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the target tree (``..``, absolute path, bad link)."""


class _Retryable(Exception):
    """A failure worth another attempt: network error, timeout, 5xx, body cut short."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


def archive_url(base_url: str, filename: str) -> str:
    """Join like a URL for http(s)/file sources and like a path for plain folders."""
    if _is_http(base_url) or base_url.startswith("file:"):
        return f"{base_url.rstrip('/')}/{filename}"
    return str(Path(base_url) / filename)


def md5sum(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def backoff_delay(attempt: int, base_s: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based): base * 2**attempt."""
    base = BACKOFF_BASE_S if base_s is None else base_s
    return min(base * 2**attempt, BACKOFF_MAX_S)


def part_path(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


def aside_path(dest: str | Path, md5: str) -> Path:
    """Where an archive with md5 ``md5`` is kept: ``images.tar.gz`` -> ``images.md5-<md5>.tar.gz``.

    A DVC out never holds it: ``data/downloads`` is outside the pipeline's outputs.
    """
    dest = Path(dest)
    stem, dot, extension = dest.name.partition(".")
    return dest.with_name(f"{stem}.md5-{md5.lower()}{dot}{extension}")


def keep_aside(source: Path, dest: Path, md5: str) -> Path:
    """Move the complete archive ``source`` (whose md5 is ``md5``) to :func:`aside_path`.

    One file per md5: when that name already holds a file with this md5, ``source`` is a copy of
    it and is removed instead. Returns where the archive now is.
    """
    target = aside_path(dest, md5)
    if target.exists() and md5sum(target) == md5:
        source.unlink()
    else:
        os.replace(source, target)
    return target


def _take_back_aside(dest: Path, expected: str) -> bool:
    """Restore ``dest`` from a kept-aside archive whose md5 is ``expected``; False if none."""
    kept = aside_path(dest, expected)
    if not kept.is_file():
        return False
    actual = md5sum(kept)
    if actual != expected:  # damaged since: file it under the md5 it really has
        log.warning("%s has md5 %s, not the one in its name", kept, actual)
        keep_aside(kept, dest, actual)
        return False
    os.replace(kept, dest)
    log.info("%s: restored from %s (md5 %s verified); no download needed", dest, kept, expected)
    return True


def download_archive(
    url: str,
    dest: str | Path,
    md5: str,
    retries: int = 5,
    timeout_s: float = 30,
    *,
    backoff_s: float | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Make ``dest`` hold the verified file at ``url`` and return it.

    A ``dest`` that already verifies is kept without touching the network. ``url`` may be
    http(s), ``file://`` or a plain path. A ``<dest>.part`` left by a broken transfer is resumed;
    one left by an earlier run that turns out to be stale is discarded and fetched once afresh.
    """
    dest = Path(dest)
    expected = md5.lower()
    previous = None  # md5 of an archive this run found in place and kept aside
    if dest.exists():
        actual = md5sum(dest)
        if actual == expected:
            log.info("%s already present, md5 verified; skipping download", dest)
            return dest
        kept = keep_aside(dest, dest, actual)
        previous = actual
        log.warning(
            "%s has md5 %s but params.yaml data.md5.%s says %s; kept it as %s and fetching the "
            "archive again",
            dest,
            actual,
            _archive_key(dest),
            expected,
            kept,
        )
    if _take_back_aside(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    # Only an http transfer resumes; a stale partial from an earlier run gets one fresh retry.
    stale_part = _is_http(url) and part.exists() and part.stat().st_size > 0
    while True:
        if _is_http(url):
            _fetch_http(url, part, retries, timeout_s, backoff_s, session)
        else:
            _copy_local(url, part)
        actual = md5sum(part)
        if actual == expected:
            break
        if stale_part:  # bytes of two transfers: not an archive worth keeping
            part.unlink()
            log.warning(
                "%s resumed from an earlier partial file that does not match; "
                "discarded it, downloading from the start",
                dest.name,
            )
            stale_part = False
            continue
        raise _mismatch(dest, url, expected, actual, keep_aside(part, dest, actual), previous)
    os.replace(part, dest)
    log.info("%s verified (md5 %s)", dest, expected)
    return dest


def _mismatch(
    dest: Path, url: str, expected: str, actual: str, kept: Path, previous: str | None
) -> ChecksumError:
    key = _archive_key(dest)
    again = ""
    if previous == actual:
        again = (
            f" The {dest.name} already here before this run had the same md5, so most likely "
            "params.yaml is what is wrong."
        )
    return ChecksumError(
        f"the archive at {kept} has md5 {actual}, params say {expected} (data.md5.{key} in "
        f"params.yaml; fetched from {url}).{again} If {actual} is right, set "
        f"data.md5.{key}: '{actual}' in params.yaml: the next run uses the kept archive without "
        "downloading. Otherwise check that data.base_url points at an intact mirror of the "
        f"official archives, and delete {kept}."
    )


def fetch_dataset(
    base_url: str,
    md5: Mapping[str, str],
    downloads_dir: str | Path,
    raw_dir: str | Path,
    retries: int = 5,
    timeout_s: float = 30,
    *,
    backoff_s: float | None = None,
) -> Path:
    """Download both archives into ``downloads_dir`` and unpack them as ``raw_dir``.

    ``raw_dir`` is replaced only after both archives extracted fully, so a failure leaves the
    previous state (usually no ``raw_dir`` at all, as DVC removes outputs before a run).
    """
    downloads_dir, raw_dir = Path(downloads_dir), Path(raw_dir)
    missing = [name for name in ARCHIVES if name not in md5]
    if missing:
        keys = ", ".join(f"data.md5.{name}" for name in missing)
        raise DownloadError(f"params.yaml: {keys} missing; add the archive md5 sum(s).")
    archives: dict[str, Path] = {}
    with requests.Session() as session:
        for name in ARCHIVES:
            filename = f"{name}.tar.gz"
            archives[name] = download_archive(
                archive_url(base_url, filename),
                downloads_dir / filename,
                md5[name],
                retries,
                timeout_s,
                backoff_s=backoff_s,
                session=session,
            )
    with atomic_dir(raw_dir) as tmp:
        for name, archive in archives.items():
            safe_extract(archive, tmp)
            if not (tmp / name).is_dir():
                raise ArchiveError(
                    f"{archive}: has no top-level {name}/ folder, unlike the official archive. "
                    "Check data.base_url and data.md5 in params.yaml."
                )
    log.info("extracted %s", ", ".join(str(raw_dir / name) for name in ARCHIVES))
    return raw_dir


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Unpack ``archive`` under ``dest``, refusing any member that would escape it.

    Members already written before a refused one stay in ``dest``: extract into a temp dir
    (:func:`petsml.io.atomic_dir`) when that matters, as :func:`fetch_dataset` does.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    size = archive.stat().st_size
    try:
        with (
            open(archive, "rb") as raw,
            tqdm.wrapattr(raw, "read", total=size, desc=f"extract {archive.name}") as counted,
            # Stream mode: one sequential pass over the gzip, whatever the archive's size.
            tarfile.open(fileobj=counted, mode="r|*") as tar,
        ):
            tar.extractall(dest, filter=_strict_data_filter)
    except tarfile.FilterError as error:
        member = error.tarinfo.name if error.tarinfo is not None else "?"
        raise UnsafeArchiveError(
            f"{archive}: refused member {member!r} ({error}). The archive tries to write "
            "outside its folder, so it is not the official one; check data.base_url and "
            "data.md5 in params.yaml."
        ) from None
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ArchiveError(
            f"{archive}: cannot be unpacked ({error}). Delete it and re-run the download stage; "
            "if it happens again, check data.base_url and data.md5 in params.yaml."
        ) from None


def _strict_data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    # tarfile's data filter silently strips a leading "/"; an official archive never has one.
    if member.name.startswith(("/", os.sep)):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, path)


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def _archive_key(dest: Path) -> str:
    return dest.name.split(".", 1)[0]


def _local_source(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(
                f"{url}: a file:// URL needs an absolute path (file:///path/to/folder). "
                + MIRROR_HINT
            )
        return Path(url2pathname(parts.path))
    if len(parts.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise DownloadError(
            f"{url}: unsupported scheme {parts.scheme!r}; use http(s), file:// or a folder. "
            + MIRROR_HINT
        )
    return Path(url)


def _copy_local(url: str, part: Path) -> None:
    source = _local_source(url)
    if not source.is_file():
        raise DownloadError(f"{source}: not found (from data.base_url {url!r}). " + MIRROR_HINT)
    log.info("copying %s", source)
    with (
        open(source, "rb") as src,
        open(part, "wb") as out,
        _progress(part, source.stat().st_size, 0) as bar,
    ):
        while chunk := src.read(CHUNK_BYTES):
            out.write(chunk)
            bar.update(len(chunk))


def _progress(part: Path, total: int | None, initial: int) -> tqdm:
    name = part.name.removesuffix(PART_SUFFIX)
    return tqdm(
        total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024
    )


def _fetch_http(
    url: str,
    part: Path,
    retries: int,
    timeout_s: float,
    backoff_s: float | None,
    session: requests.Session | None,
) -> None:
    own_session = session is None
    session = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                _http_attempt(session, url, part, timeout_s)
                return
            except _Retryable as failure:
                if attempt == retries:
                    _give_up(url, part, retries, failure)
                delay = backoff_delay(attempt, backoff_s)
                log.warning(
                    "%s: %s; retry %d/%d in %.2g s", url, failure, attempt + 1, retries, delay
                )
                time.sleep(delay)
    finally:
        if own_session:
            session.close()


def _give_up(url: str, part: Path, retries: int, failure: _Retryable) -> NoReturn:
    kept = ""
    if part.exists() and part.stat().st_size:
        kept = f" The partial file {part} is kept; re-running resumes it."
    tries = f"{retries + 1} attempt{'s' if retries else ''}"
    if failure.unreachable:
        raise DownloadError(
            f"cannot reach {url} after {tries} ({failure}); the network or the server is "
            f"unreachable.{kept} {MIRROR_HINT}"
        ) from None
    raise DownloadError(f"{url}: failed after {tries}: {failure}.{kept} {MIRROR_HINT}") from None


def _http_attempt(session: requests.Session, url: str, part: Path, timeout_s: float) -> None:
    """One request; appends to ``part`` from its current size when the server honours Range."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: Range offsets count the bytes on disk, never a re-encoded stream.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except requests.exceptions.ConnectTimeout as error:
        raise _Retryable(f"connection timed out ({error})", unreachable=True) from None
    except requests.exceptions.Timeout as error:
        raise _Retryable(f"timed out after {timeout_s} s ({error})") from None
    except requests.exceptions.ConnectionError as error:
        raise _Retryable(f"connection failed ({error})", unreachable=True) from None
    with response:
        status = response.status_code
        if status == 416 and offset:
            total = _range_total(response.headers.get("Content-Range", ""))
            if total == offset:
                log.info("%s: partial file is already complete", url)
                return
            log.warning("%s: server refused resuming at byte %d; starting over", url, offset)
            part.unlink()
            return _http_attempt(session, url, part, timeout_s)
        if status == 404:
            raise DownloadError(
                f"{url}: not found (HTTP 404). The mirror does not hold this file. " + MIRROR_HINT
            )
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}")
        if status not in (200, 206):
            raise DownloadError(f"{url}: HTTP {status} {response.reason}. " + MIRROR_HINT)
        if status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                log.warning(
                    "%s: server resumed at byte %s, not %d; starting over", url, start, offset
                )
                part.unlink()
                return _http_attempt(session, url, part, timeout_s)
            mode = "ab"
            log.info("%s: resuming at byte %d", url, offset)
        else:
            if offset:
                log.info("%s: server ignored the Range request; starting over", url)
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        total = offset + expected if expected is not None else None
        with open(part, mode) as out, _progress(part, total, offset) as bar:
            try:
                for chunk in response.iter_content(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (requests.exceptions.RequestException, OSError) as error:
                raise _Retryable(
                    f"transfer broke after {offset + received} bytes ({error})"
                ) from None
        if expected is not None and received < expected:
            raise _Retryable(f"body cut short: {received} of {expected} bytes")


def _range_start(content_range: str) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(content_range: str) -> int | None:
    # "bytes */200" on a 416
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None
