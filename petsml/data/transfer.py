"""Bytes from a URL into ``<name>.part``: HTTP with resume and retry, or a local copy.

The images archive is about 800 MB and the VGG server is slow and sometimes down, so a transfer
that breaks resumes with an HTTP ``Range`` request instead of starting over, transient failures
are retried with exponential backoff, and a mirror or a local folder can stand in for the server.
Nothing here checks what arrived: :mod:`petsml.data.verified_archive` does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from tqdm import tqdm

from petsml.errors import PetsError

log = logging.getLogger(__name__)

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


class _Retryable(Exception):
    """A failure worth another attempt: network error, timeout, 5xx, body cut short."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


def archive_url(base_url: str, filename: str) -> str:
    """Join like a URL for http(s)/file sources and like a path for plain folders."""
    if is_http(base_url) or base_url.startswith("file:"):
        return f"{base_url.rstrip('/')}/{filename}"
    return str(Path(base_url) / filename)


def backoff_delay(attempt: int, base_s: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based): base * 2**attempt."""
    base = BACKOFF_BASE_S if base_s is None else base_s
    return min(base * 2**attempt, BACKOFF_MAX_S)


def is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


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


def copy_local(url: str, part: Path) -> str:
    """Copy the local file ``url`` names into ``part``; says where the bytes came from."""
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
    return f"read from the local file {source}"


def _progress(part: Path, total: int | None, initial: int) -> tqdm:
    name = part.name.removesuffix(PART_SUFFIX)
    return tqdm(
        total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024
    )


def fetch_http(
    url: str,
    part: Path,
    retries: int,
    timeout_s: float,
    backoff_s: float | None,
    session: requests.Session | None,
) -> str:
    """Fetch ``url`` into ``part`` (resuming, retrying); what the server last answered."""
    own_session = session is None
    session = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                return _http_attempt(session, url, part, timeout_s)
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


def _http_attempt(session: requests.Session, url: str, part: Path, timeout_s: float) -> str:
    """One request; appends to ``part`` from its current size when the server honours Range.
    Returns what the server answered (status, Content-Type), for messages about the bytes."""
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
                return f"the server answered HTTP 416: the {offset} bytes here are the whole file"
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
        answered = f"the server answered HTTP {status} {response.reason}".strip()
        if response.headers.get("Content-Type"):
            answered += f", Content-Type {response.headers['Content-Type']}"
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
        return answered


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
