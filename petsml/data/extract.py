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


GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 1024


def not_gzip(path: str | Path) -> str | None:
    """What ``path`` is when it is not a gzip archive ("an HTML page (title '...')", "an empty
    file", "a file starting with ..."), from its first bytes; None for a gzip archive.

    A login page, an error page or a mirror's folder listing served with HTTP 200 under the
    archive's name is the usual case: say so, instead of an md5 mismatch (whose fix would adopt
    the page's md5) followed by tarfile's "truncated header".
    """
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(GZIP_MAGIC):
        return None
    if not head:
        return "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        title = ""
        if b"<title>" in text:
            raw = head[head.lower().index(b"<title>") + 7 :].split(b"<", 1)[0]
            title = " ".join(raw.decode("utf-8", "replace").split())[:80]
        return "an HTML page" + (f" (title {title!r})" if title else "")
    if text.startswith((b"<?xml", b"<")):
        return "an XML/markup document"
    if text.startswith((b"{", b"[")):
        return "a JSON document"
    shown = head[:16].hex(" ")
    return f"a file starting with bytes {shown}"


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Unpack ``archive`` under ``dest``, refusing any member that would escape it.

    Members already written before a refused one stay in ``dest``: extract into a temp dir
    (:func:`petsml.io.atomic_dir`) when that matters, as :func:`fetch_dataset` does.
    """
    archive, dest = Path(archive), Path(dest)
    what = not_gzip(archive)
    if what is not None:  # before tarfile's "truncated header" or "not a gzip file"
        raise ArchiveError(
            f"{archive}: this is {what}, not a gzip archive; nothing was extracted. Check "
            "data.base_url and data.md5 in params.yaml."
        )
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
