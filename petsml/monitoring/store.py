"""The append-only prediction store: SQLite by default, the same tables on PostgreSQL for a team.

Why SQLite, and how it is made safe (docs/MONITORING.md, "Where records go"):

- WAL journal: readers (``pets monitor``) never block writers, and several writer processes
  (server workers) take turns on one file; each append is one ``BEGIN IMMEDIATE`` transaction,
  so it either commits whole or not at all. A committed record survives its writer being
  SIGKILLed at any point: the WAL holds it, the next open replays it. ``synchronous=NORMAL``
  skips the fsync per commit (a power cut may lose the last commits, a crash of the process
  cannot); ``monitor.durable`` turns on ``FULL`` for power-cut safety.
- ``busy_timeout``: a writer that finds the file locked waits (up to 30 s) rather than failing.
- Bounded: every append updates ``monitor_totals`` in its own transaction and, past
  ``monitor.max_rows`` or ``monitor.max_mb``, drops (or archives, :mod:`.rotation`) the oldest
  records down to 90 % of the cap, so a cap is never exceeded after a commit.

PostgreSQL (``monitor.store: postgresql://user@host:port/db``, psycopg2) runs the same SQL: the
totals row's lock serialises writers' cap checks there as the file lock does in SQLite.

A store is safe to share between threads (one lock, one connection) and across ``fork`` (a
child opens its own connection).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from petsml.errors import PetsError
from petsml.monitoring import rotation
from petsml.monitoring.feedback import Feedback, FeedbackPhoto
from petsml.monitoring.record import ModelRef, PredictionRecord
from petsml.monitoring.schema import (
    FEEDBACK_COLUMNS,
    POSTGRES,
    PREDICTION_COLUMNS,
    SCHEMA_VERSION,
    SQLITE,
    WINDOW_COLUMNS,
    Dialect,
    classes_key,
    ddl,
    prediction_row,
    window_from_rows,
)
from petsml.monitoring.settings import MonitorSettings
from petsml.monitoring.window import Window

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30
POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "postgres://")
_SCHEMA_LOCK = 0x7065_7473  # pg_advisory_xact_lock key: concurrent first opens create once


class StoreError(PetsError):
    """The monitoring store cannot be opened or written."""


class UnknownPredictionError(PetsError):
    """Feedback names a prediction id the store does not hold."""


def is_postgres(location: str) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def sqlite_path(location: str | Path) -> Path:
    text = str(location)
    return Path(text[len("sqlite:///") :] if text.startswith("sqlite:///") else text)


class MonitorStore:
    """Predictions and feedback in one database (see the module docstring)."""

    dialect: Dialect = SQLITE

    def __init__(self, location: str | Path, settings: MonitorSettings):
        self.location = str(location)
        self.settings = settings
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = -1
        with self._transaction() as cur:
            if self.dialect is POSTGRES:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in ddl(self.dialect):
                cur.execute(statement, (SCHEMA_VERSION,) if "INSERT" in statement else ())

    # --- connections ------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    def _connection(self) -> Any:
        if self._conn is None or self._pid != os.getpid():  # never reuse a parent's connection
            self._conn, self._pid = self._connect(), os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor inside one write transaction: committed on success, rolled back otherwise."""
        with self._lock:
            conn = self._connection()
            cur = conn.cursor()
            try:
                self._begin(cur)
                yield cur
                conn.commit()
            except BaseException:
                self._abandon(conn)
                raise
            finally:
                with suppress(Exception):
                    cur.close()

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.cursor()
                cur.execute(self.dialect.sql(sql), tuple(params))
                rows = cur.fetchall()
                cur.close()
                if self.dialect is POSTGRES:
                    conn.rollback()  # end the read transaction psycopg2 opened
            except BaseException:
                self._abandon(conn)
                raise
            return rows

    def _abandon(self, conn: Any) -> None:
        """Roll back after a failure; a connection the server dropped (a PostgreSQL restart) is
        let go, so the next call connects afresh instead of failing for ever."""
        with suppress(Exception):
            conn.rollback()
        if getattr(conn, "closed", 0):  # psycopg2: nonzero once the connection is gone
            self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> MonitorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ----------------------------------------------------------------------------
    def append(self, record: PredictionRecord) -> None:
        """Commit ``record`` (and its photo when it carries one); rotates past a cap."""
        self.append_many([record])

    def append_many(self, records: Iterable[PredictionRecord]) -> int:
        """Commit ``records`` in one transaction: all of them or none. Returns how many old
        records rotation dropped to make room (0 almost always)."""
        sql = self.dialect.sql
        insert = sql(
            f"INSERT INTO monitor_predictions ({', '.join(PREDICTION_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})"
        )
        dropped = 0
        with self._transaction() as cur:
            rows = weight = 0
            for record in records:
                key, names = classes_key(record.class_names)
                cur.execute(
                    sql("INSERT INTO monitor_classes (key, names) VALUES (?, ?) "
                        "ON CONFLICT DO NOTHING"), (key, names),
                )  # fmt: skip
                row = prediction_row(record)
                cur.execute(insert, row)
                if record.photo is not None:
                    cur.execute(
                        sql("INSERT INTO monitor_photos (prediction_id, data) VALUES (?, ?)"),
                        (record.id, record.photo),
                    )
                rows, weight = rows + 1, weight + row[-1]
            if not rows:
                return 0
            cur.execute(
                sql("UPDATE monitor_totals SET rows = rows + ?, bytes = bytes + ? WHERE id = 1 "
                    "RETURNING rows, bytes"), (rows, weight),
            )  # fmt: skip
            kept_rows, kept_bytes = cur.fetchone()
            if kept_rows > self.settings.max_rows or kept_bytes > self.settings.max_bytes:
                dropped = rotation.rotate(cur, self.dialect, self.settings, kept_rows, kept_bytes)
        if dropped:
            self._rotated()
        return dropped

    def rotate(self) -> int:
        """Apply the caps now (every append applies them anyway); returns records dropped."""
        with self._transaction() as cur:
            cur.execute("SELECT rows, bytes FROM monitor_totals WHERE id = 1")
            rows, weight = cur.fetchone()
            dropped = 0
            if rows > self.settings.max_rows or weight > self.settings.max_bytes:
                dropped = rotation.rotate(cur, self.dialect, self.settings, rows, weight)
        if dropped:
            self._rotated()
        return dropped

    def _rotated(self) -> None:
        """After a rotation committed (SQLite gives the freed pages back)."""

    def add_feedback(
        self, prediction_id: str, label: str, source: str = "", when: float | None = None
    ) -> Feedback:
        """Store "the answer to ``prediction_id`` should have been ``label``"; the latest
        feedback on a prediction is the one that counts."""
        label = str(label).strip()
        if not label:
            raise PetsError("feedback needs a label: the class the photo really shows")
        sql = self.dialect.sql
        with self._transaction() as cur:
            cur.execute(
                sql("SELECT model_name, model_version, label, time FROM monitor_predictions "
                    "WHERE id = ?"), (prediction_id,),
            )  # fmt: skip
            found = cur.fetchone()
            if found is None:
                raise UnknownPredictionError(
                    f"no prediction {prediction_id!r} in the monitoring store {self.location}: "
                    "it was never recorded (monitor.log off?) or rotated out (monitor.max_rows)"
                )
            when = time.time() if when is None else float(when)
            feedback = Feedback(prediction_id, when, label, str(source), *found)
            cur.execute(
                sql(f"INSERT INTO monitor_feedback ({', '.join(FEEDBACK_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})"),
                tuple(getattr(feedback, name) for name in FEEDBACK_COLUMNS),
            )  # fmt: skip
        return feedback

    # --- reading ----------------------------------------------------------------------------
    def totals(self) -> tuple[int, int]:
        """(records kept, their bytes) as the caps count them."""
        rows = self._query("SELECT rows, bytes FROM monitor_totals WHERE id = 1")
        return int(rows[0][0]), int(rows[0][1])

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM monitor_predictions")[0][0])

    def ids(self) -> list[str]:
        """Every kept prediction id, oldest first."""
        return [r[0] for r in self._query("SELECT id FROM monitor_predictions ORDER BY seq")]

    def models(self) -> list[ModelRef]:
        """The model versions with records, most recently recorded first."""
        rows = self._query(
            "SELECT model_name, model_version, MAX(seq) FROM monitor_predictions "
            "GROUP BY model_name, model_version ORDER BY MAX(seq) DESC"
        )
        return [ModelRef(name, version) for name, version, _ in rows]

    def window(
        self,
        model: ModelRef | None = None,
        last: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Window:
        """The ``last`` predictions (default ``monitor.window``) of ``model`` (default: the most
        recently recorded version) made in ``[since, until)``, oldest first."""
        if model is None:
            known = self.models()
            model = known[0] if known else ModelRef()
        where, params = ["model_name = ?", "model_version = ?"], [model.name, model.version]
        if since is not None:
            where.append("time >= ?")
            params.append(float(since))
        if until is not None:
            where.append("time < ?")
            params.append(float(until))
        limit = int(last or self.settings.window)
        rows = self._query(
            f"SELECT {', '.join(WINDOW_COLUMNS)} FROM monitor_predictions "
            f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        )
        rows.reverse()
        classes = dict(self._query("SELECT key, names FROM monitor_classes"))
        return window_from_rows(rows, classes, model.name, model.version)

    def feedback(self) -> list[Feedback]:
        """The latest feedback on each prediction, in the order it was given."""
        rows = self._query(
            f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM monitor_feedback ORDER BY seq"
        )
        latest = {row[0]: Feedback(*row) for row in rows}
        return sorted(latest.values(), key=lambda f: f.time)

    def photo(self, prediction_id: str) -> bytes | None:
        rows = self._query(
            "SELECT data FROM monitor_photos WHERE prediction_id = ?", [prediction_id]
        )
        return bytes(rows[0][0]) if rows else None

    def feedback_photos(self) -> list[FeedbackPhoto]:
        """Kept photos that have feedback, each with its latest feedback label."""
        latest = {f.prediction_id: f.label for f in self.feedback()}
        rows = self._query(
            "SELECT p.id, p.format, p.sha256, ph.data FROM monitor_predictions p "
            "JOIN monitor_photos ph ON ph.prediction_id = p.id "
            "WHERE p.id IN (SELECT prediction_id FROM monitor_feedback) ORDER BY p.seq"
        )
        return [FeedbackPhoto(pid, latest[pid], fmt, sha, bytes(data))
                for pid, fmt, sha, data in rows if pid in latest]  # fmt: skip


class SQLiteStore(MonitorStore):
    dialect = SQLITE

    def _connect(self) -> sqlite3.Connection:
        path = sqlite_path(self.location)
        if path.is_dir():
            raise StoreError(
                f"monitor.store {path} is a folder: give a file path such as "
                f"{path / 'predictions.sqlite'}"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new file only
            conn.execute("PRAGMA journal_mode = WAL")
            synchronous = "FULL" if self.settings.durable else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except (OSError, sqlite3.Error) as error:
            raise StoreError(
                f"monitor.store {path}: cannot open the SQLite store ({error}); point "
                "monitor.store at a writable file"
            ) from None
        return conn

    def _begin(self, cur: sqlite3.Cursor) -> None:
        cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks

    def _rotated(self) -> None:
        """Give the pages rotation freed back to the file system: the file shrinks."""
        with self._lock:
            self._connection().execute("PRAGMA incremental_vacuum").fetchall()


class PostgresStore(MonitorStore):
    dialect = POSTGRES

    def _connect(self) -> Any:
        try:
            import psycopg2
        except ImportError:
            raise StoreError(
                f"monitor.store {self.location} is PostgreSQL, and psycopg2 is not installed: "
                "`pip install psycopg2-binary`"
            ) from None
        dsn = "postgresql://" + self.location.split("://", 1)[1]
        try:
            return psycopg2.connect(dsn, connect_timeout=10)
        except psycopg2.Error as error:
            raise StoreError(
                f"monitor.store {self.location}: cannot connect ({str(error).strip()}); check "
                "the URL, that the server runs and that the user may create tables"
            ) from None

    def _begin(self, cur: Any) -> None:
        pass  # psycopg2 opens a transaction with the first statement


def open_store(location: str | Path, settings: MonitorSettings) -> MonitorStore:
    """The store at ``location``: a ``postgresql://`` URL, or a SQLite file path
    (``sqlite:///`` prefix optional; its folder is created)."""
    if is_postgres(str(location)):
        return PostgresStore(location, settings)
    return SQLiteStore(location, settings)
