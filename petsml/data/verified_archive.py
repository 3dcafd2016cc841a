"""An archive trusted only once its md5 matches ``params.yaml``, and kept aside when it does not.

Downloads land in ``<name>.part`` and are renamed only once verified. A complete archive whose
md5 differs from ``params.yaml`` is never deleted: the md5 in params may be the thing that is
wrong (a typo, another release). It is kept aside as ``<name>.md5-<its md5>.tar.gz`` next to
where it was, the error names it, and a later run whose params ask for that md5 takes it back
instead of downloading again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import requests

from petsml.data.extract import not_gzip
from petsml.data.transfer import (
    CHUNK_BYTES,
    MIRROR_HINT,
    PART_SUFFIX,
    DownloadError,
    copy_local,
    fetch_http,
    is_http,
)

log = logging.getLogger(__name__)


class ChecksumError(DownloadError):
    """Fetched bytes do not match the md5 in params.yaml; the file is kept aside under its md5."""


class NotAnArchiveError(DownloadError):
    """What arrived is no gzip archive at all (an HTML page, say): no md5 is worth adopting."""


def not_an_archive_path(dest: str | Path) -> Path:
    """Where bytes that are no archive are kept to look at: ``images.not-an-archive``."""
    dest = Path(dest)
    return dest.with_name(f"{dest.name.split('.', 1)[0]}.not-an-archive")


def md5sum(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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
    stale_part = is_http(url) and part.exists() and part.stat().st_size > 0
    while True:
        if is_http(url):
            answered = fetch_http(url, part, retries, timeout_s, backoff_s, session)
        else:
            answered = copy_local(url, part)
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
        what = not_gzip(part)
        if what is not None:  # never suggest adopting the md5 of a page
            kept = not_an_archive_path(dest)
            os.replace(part, kept)
            raise NotAnArchiveError(
                f"{url}: this is {what}, not a gzip archive ({answered}); "
                f"kept as {kept} to look at. data.base_url must name a folder holding "
                f"images.tar.gz and annotations.tar.gz themselves. {MIRROR_HINT}"
            )
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


def _archive_key(dest: Path) -> str:
    return dest.name.split(".", 1)[0]
