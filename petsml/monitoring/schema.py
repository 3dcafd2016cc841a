"""The monitoring tables, the same on SQLite and PostgreSQL, and rows to arrays.

Tables (prefixed ``monitor_`` so they can share a database with MLflow's):

- ``monitor_predictions``: one row per :class:`~petsml.monitoring.record.PredictionRecord`;
  ``seq`` orders them (rotation drops the lowest), ``id`` is the record's UUID that feedback
  names, ``record_bytes`` what the row weighs for the byte cap (vectors, top-5 text, photo).
- ``monitor_classes``: each distinct class-name list once, keyed by its hash, so a record
  stores 16 characters instead of 37 names.
- ``monitor_photos``: the photo of a record, only with ``keep_photos``; deleted with its record.
- ``monitor_feedback``: "wrong, it is X": the answered record's id plus a copy of what it
  predicted and which model did, so accuracy over time outlives the record's rotation.
- ``monitor_totals``: one row, the rows and bytes kept, updated in every writing transaction:
  the caps are checked without counting the table.

Each dialect differs only in a few type names and its placeholder (:class:`Dialect`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from petsml.monitoring.record import EMBEDDING_DTYPE, PROBABILITY_DTYPE, PredictionRecord, pack
from petsml.monitoring.window import Sample, Window, empty_sample

SCHEMA_VERSION = 1
ROW_OVERHEAD = 200  # bytes of ids, times, names and index entries counted per record


@dataclass(frozen=True)
class Dialect:
    name: str
    serial: str  # an auto-incrementing primary key
    blob: str
    real: str
    placeholder: str

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in this dialect's."""
        return text.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "REAL", "?")
POSTGRES = Dialect("postgresql", "BIGSERIAL PRIMARY KEY", "BYTEA", "DOUBLE PRECISION", "%s")

PREDICTION_COLUMNS = (
    "id", "time", "model_name", "model_version", "model_alias", "source", "label",
    "probability", "top5", "classes_key", "probabilities", "embedding", "width", "height",
    "format", "mode", "greyscale", "image_bytes", "sha256", "record_bytes",
)  # fmt: skip
FEEDBACK_COLUMNS = (
    "prediction_id", "time", "label", "source", "model_name", "model_version", "predicted",
    "prediction_time",
)  # fmt: skip


def ddl(d: Dialect) -> list[str]:
    """CREATE statements (idempotent) for dialect ``d``."""
    return [
        f"""CREATE TABLE IF NOT EXISTS monitor_predictions (
            seq {d.serial}, id TEXT NOT NULL UNIQUE, time {d.real} NOT NULL,
            model_name TEXT NOT NULL, model_version TEXT NOT NULL, model_alias TEXT NOT NULL,
            source TEXT NOT NULL, label TEXT NOT NULL, probability {d.real} NOT NULL,
            top5 TEXT NOT NULL, classes_key TEXT NOT NULL, probabilities {d.blob} NOT NULL,
            embedding {d.blob} NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
            format TEXT NOT NULL, mode TEXT NOT NULL, greyscale INTEGER NOT NULL,
            image_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, record_bytes INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS monitor_predictions_model "
        "ON monitor_predictions (model_name, model_version, seq)",
        "CREATE TABLE IF NOT EXISTS monitor_classes (key TEXT PRIMARY KEY, names TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS monitor_photos (
            prediction_id TEXT PRIMARY KEY
                REFERENCES monitor_predictions (id) ON DELETE CASCADE,
            data {d.blob} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS monitor_feedback (
            seq {d.serial}, prediction_id TEXT NOT NULL, time {d.real} NOT NULL,
            label TEXT NOT NULL, source TEXT NOT NULL, model_name TEXT NOT NULL,
            model_version TEXT NOT NULL, predicted TEXT NOT NULL,
            prediction_time {d.real} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS monitor_feedback_prediction "
        "ON monitor_feedback (prediction_id)",
        """CREATE TABLE IF NOT EXISTS monitor_totals (
            id INTEGER PRIMARY KEY, rows BIGINT NOT NULL, bytes BIGINT NOT NULL,
            schema_version INTEGER NOT NULL)""",
        d.sql(
            "INSERT INTO monitor_totals (id, rows, bytes, schema_version) VALUES (1, 0, 0, ?) "
            "ON CONFLICT DO NOTHING"
        ),
    ]


def classes_key(class_names: tuple[str, ...]) -> tuple[str, str]:
    """(key, JSON text) of a class-name list."""
    text = json.dumps(list(class_names))
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


def prediction_row(record: PredictionRecord) -> tuple:
    """The ``monitor_predictions`` values of ``record``, in :data:`PREDICTION_COLUMNS` order."""
    probabilities = pack(record.probabilities, PROBABILITY_DTYPE)
    embedding = pack(record.embedding, EMBEDDING_DTYPE)
    top5 = record.top5_json()
    weight = len(probabilities) + len(embedding) + len(top5) + ROW_OVERHEAD
    weight += len(record.photo or b"")
    image, model = record.image, record.model
    return (
        record.id, record.time, model.name, model.version, model.alias, record.source,
        record.label, record.confidence, top5, classes_key(record.class_names)[0], probabilities,
        embedding, image.width, image.height, image.format, image.mode, int(image.greyscale),
        image.bytes, image.sha256, weight,
    )  # fmt: skip


WINDOW_COLUMNS = ("id", "time", "sha256", "probabilities", "embedding", "width", "height",
                  "format", "greyscale", "classes_key")  # fmt: skip


def window_from_rows(
    rows: list[tuple], classes: dict[str, str], model_name: str, model_version: str
) -> Window:
    """A :class:`Window` from ``rows`` (:data:`WINDOW_COLUMNS`, oldest first); ``classes`` maps
    class keys to their JSON. Every row must share one class list (one model version does)."""
    keys = {row[9] for row in rows}
    if len(keys) > 1:
        raise ValueError(
            f"the window mixes {len(keys)} class lists: select one model name and version"
        )
    names: tuple[str, ...] = tuple(json.loads(classes[keys.pop()])) if keys else ()
    if not rows:
        sample = empty_sample(names)
        return Window(sample, np.zeros(0, str), np.zeros(0), np.zeros(0, str), model_name,
                      model_version)  # fmt: skip
    probabilities = np.stack([np.frombuffer(bytes(r[3]), PROBABILITY_DTYPE) for r in rows])
    dims = {len(bytes(r[4])) for r in rows}
    if len(dims) == 1:
        embeddings = np.stack([np.frombuffer(bytes(r[4]), EMBEDDING_DTYPE) for r in rows])
    else:  # some records came without an embedding: MMD cannot use this window
        embeddings = np.zeros((len(rows), 0), np.float16)
    sample = Sample(
        class_names=names,
        probabilities=probabilities.astype(np.float32),
        embeddings=embeddings.astype(np.float32),
        width=np.array([r[5] for r in rows], np.int64),
        height=np.array([r[6] for r in rows], np.int64),
        format=np.array([r[7] for r in rows], dtype=str),
        greyscale=np.array([bool(r[8]) for r in rows]),
    )
    return Window(
        sample, np.array([r[0] for r in rows], dtype=str), np.array([r[1] for r in rows], float),
        np.array([r[2] for r in rows], dtype=str), model_name, model_version,
    )  # fmt: skip
