"""Safe extraction: every member through tarfile's ``data`` filter, none outside its folder."""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path

from tqdm import tqdm

from petsml.errors import PetsError


class ArchiveError(PetsError):
    """A verified archive could not be unpacked (corrupt, or not the official layout)."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the target tree (``..``, absolute path, bad link)."""


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
