"""Fetch and unpack the official Oxford-IIIT Pet archives, surviving a flaky or absent network.

The images archive is about 800 MB and the VGG server is slow and sometimes down, so a transfer
that breaks resumes with an HTTP ``Range`` request instead of starting over, transient failures
are retried with exponential backoff, and a mirror or a local folder can stand in for the server.
Nothing is trusted before its md5 matches ``params.yaml``: downloads land in ``<name>.part`` and
are renamed only once verified, and extraction goes through tarfile's ``data`` filter into a temp
directory that replaces ``data/raw`` only when both archives unpacked fully.

The transfer is :mod:`petsml.data.transfer`, the md5 check and keep-aside
:mod:`petsml.data.verified_archive`, the extraction :mod:`petsml.data.extract`; this module
puts them together for the download stage.

A complete archive whose md5 differs from ``params.yaml`` is never deleted: the md5 in params may
be the thing that is wrong (a typo, another release). It is kept aside as
``<name>.md5-<its md5>.tar.gz`` next to where it was, the error names it, and a later run whose
params ask for that md5 takes it back instead of downloading again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import requests

from petsml.data.extract import ArchiveError, UnsafeArchiveError, not_gzip, safe_extract
from petsml.data.transfer import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    CHUNK_BYTES,
    MIRROR_HINT,
    PART_SUFFIX,
    DownloadError,
    archive_url,
    backoff_delay,
)
from petsml.data.verified_archive import (
    ChecksumError,
    NotAnArchiveError,
    aside_path,
    download_archive,
    keep_aside,
    md5sum,
    part_path,
)
from petsml.io import atomic_dir

__all__ = [
    "ARCHIVES",
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "CHUNK_BYTES",
    "MIRROR_HINT",
    "PART_SUFFIX",
    "ArchiveError",
    "ChecksumError",
    "DownloadError",
    "NotAnArchiveError",
    "UnsafeArchiveError",
    "archive_url",
    "aside_path",
    "backoff_delay",
    "download_archive",
    "fetch_dataset",
    "keep_aside",
    "md5sum",
    "part_path",
    "safe_extract",
]

log = logging.getLogger(__name__)

ARCHIVES = ("images", "annotations")


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
    for name, archive in archives.items():  # an md5 adopted from a page, say
        what = not_gzip(archive)
        if what is not None:
            raise ArchiveError(
                f"{archive}: this is {what}, not a gzip archive, yet its md5 matches "
                f"data.md5.{name} in params.yaml: that md5 names this file, not the official "
                f"archive. Set data.md5.{name} back to the official md5, point data.base_url "
                f"at a mirror of the real archives, and delete {archive}."
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
