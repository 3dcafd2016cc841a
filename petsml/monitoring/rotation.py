"""Rotation: past ``monitor.max_rows`` or ``monitor.max_mb``, the oldest records go.

It runs inside the writing transaction that crossed the cap (the store holds the write lock),
so no other writer sees the store over its cap, and it drops down to :data:`LOW_WATER` of the
cap at once: one rotation per tenth of the cap's records, not one per append.

``monitor.rotation: archive`` first copies the dropped records (with their photos and class
lists) into a new SQLite file under ``monitor.archive_dir``, named by the first and last
sequence numbers it holds and readable with :func:`petsml.monitoring.store.open_store`. The file
is complete before the records are deleted; should the deleting transaction then fail, the
records stay in the store and may be archived again (an archive can repeat a record, never
miss one). Feedback rows are kept: each carries a copy of what it answers, so accuracy over time
outlives its predictions.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from petsml.io import atomic_path
from petsml.monitoring.schema import PREDICTION_COLUMNS, SCHEMA_VERSION, SQLITE, Dialect, ddl
from petsml.monitoring.settings import MonitorSettings

log = logging.getLogger(__name__)

LOW_WATER = 0.9  # rotation leaves this share of a cap filled
_CHUNK = 500  # records copied per batch into an archive


def oldest_to_drop(
    cur: Any, dialect: Dialect, settings: MonitorSettings, rows: int, weight: int
) -> tuple[int, int, int]:
    """(records, bytes, last seq) of the oldest records whose removal brings both totals to
    :data:`LOW_WATER` of their caps."""
    target_rows = int(settings.max_rows * LOW_WATER)
    target_bytes = int(settings.max_bytes * LOW_WATER)
    cur.execute("SELECT seq, record_bytes FROM monitor_predictions ORDER BY seq")
    count = freed = 0
    last = -1
    while rows - count > target_rows or weight - freed > target_bytes:
        batch = cur.fetchmany(_CHUNK)
        if not batch:
            break
        for seq, size in batch:
            if rows - count <= target_rows and weight - freed <= target_bytes:
                break
            count, freed, last = count + 1, freed + int(size), int(seq)
    return count, freed, last


def rotate(cur: Any, dialect: Dialect, settings: MonitorSettings, rows: int, weight: int) -> int:
    """Drop (or archive, then drop) the oldest records; returns how many went."""
    count, freed, last = oldest_to_drop(cur, dialect, settings, rows, weight)
    if not count:
        return 0
    if settings.rotation == "archive":
        archive(cur, dialect, last, Path(settings.archive_dir))
    sql = dialect.sql
    # photos first: PostgreSQL cascades, and so does SQLite with foreign_keys on, but an
    # explicit delete keeps the store right on a connection that forgot the pragma
    cur.execute(
        sql("DELETE FROM monitor_photos WHERE prediction_id IN "
            "(SELECT id FROM monitor_predictions WHERE seq <= ?)"), (last,),
    )  # fmt: skip
    cur.execute(sql("DELETE FROM monitor_predictions WHERE seq <= ?"), (last,))
    cur.execute(
        sql("UPDATE monitor_totals SET rows = rows - ?, bytes = bytes - ? WHERE id = 1"),
        (count, freed),
    )
    log.info("monitoring store: rotated out %d records (%.1f MB)", count, freed / 2**20)
    return count


def archive(cur: Any, dialect: Dialect, last: int, folder: Path) -> Path:
    """Copy every record with ``seq <= last`` (photos, class lists) into a new SQLite file."""
    sql = dialect.sql
    cur.execute("SELECT MIN(seq) FROM monitor_predictions")
    first = int(cur.fetchone()[0])
    target = folder / f"predictions-{first:012d}-{last:012d}.sqlite"
    columns = ", ".join(PREDICTION_COLUMNS)
    marks = ", ".join("?" * len(PREDICTION_COLUMNS))
    with atomic_path(target, suffix=".sqlite") as tmp:
        out = sqlite3.connect(tmp, isolation_level=None)
        try:
            out.execute("BEGIN")
            for statement in ddl(SQLITE):
                out.execute(statement, (SCHEMA_VERSION,) if "INSERT" in statement else ())
            cur.execute("SELECT key, names FROM monitor_classes")
            out.executemany("INSERT INTO monitor_classes (key, names) VALUES (?, ?)",
                            cur.fetchall())  # fmt: skip
            cur.execute(
                sql(f"SELECT seq, {columns} FROM monitor_predictions WHERE seq <= ? ORDER BY seq"),
                (last,),
            )
            copied = weight = 0
            while batch := cur.fetchmany(_CHUNK):
                rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                        for row in batch]  # fmt: skip
                out.executemany(
                    f"INSERT INTO monitor_predictions (seq, {columns}) VALUES (?, {marks})", rows
                )
                copied, weight = copied + len(rows), weight + sum(row[-1] for row in rows)
            cur.execute(
                sql("SELECT ph.prediction_id, ph.data FROM monitor_photos ph JOIN "
                    "monitor_predictions p ON p.id = ph.prediction_id WHERE p.seq <= ?"), (last,),
            )  # fmt: skip
            while batch := cur.fetchmany(_CHUNK):
                out.executemany(
                    "INSERT INTO monitor_photos (prediction_id, data) VALUES (?, ?)",
                    [(pid, bytes(data)) for pid, data in batch],
                )
            out.execute("UPDATE monitor_totals SET rows = ?, bytes = ? WHERE id = 1",
                        (copied, weight))  # fmt: skip
            out.execute("COMMIT")
        finally:
            out.close()
    log.info("monitoring store: archived %d records to %s", copied, target)
    return target
