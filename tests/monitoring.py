"""Generated predictions for the monitoring tests, and a writer process for the store tests.

:class:`Traffic` draws what a served model would output, seeded: photos of ``K`` classes whose
embeddings cluster by class, softmax outputs of a fixed linear head on those embeddings (so
outputs and embeddings move together, as a real model's do), and image facts. A shift is a
change of what is drawn (:meth:`Traffic.draw`'s ``classes``, ``noise``, ``grey``), never a
change of the model.

``python -m tests.monitoring STORE COUNT TAG`` appends ``COUNT`` records to the store at STORE,
one transaction each, printing each id after its commit: the concurrency and kill tests run it.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from petsml.monitoring.record import ImageFacts, ModelRef, PredictionRecord, make_record
from petsml.monitoring.reference import Reference, build_reference
from petsml.monitoring.settings import MonitorSettings, load_settings
from petsml.monitoring.window import Window
from petsml.testing.project import REPO

CLASSES = tuple(f"class_{i:02d}" for i in range(12))
DIM = 48
MODEL = ModelRef("oxford-pets-breed", "3", "champion")


def settings_with(**changes) -> MonitorSettings:
    """The shipped params.yaml's ``monitor:`` section (the one home of its values), changed."""
    return load_settings(REPO / "params.yaml").replace(**changes)


@dataclass(frozen=True)
class Draw:
    probabilities: np.ndarray
    embeddings: np.ndarray
    facts: list[ImageFacts]


class Traffic:
    """A fixed 'model' (class centres and a linear head) and photos drawn through it."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centres = rng.normal(0, 1.0, (len(CLASSES), DIM))
        self.head = self.centres * 1.5  # logits: similarity to each centre

    def draw(
        self,
        n: int,
        seed: int,
        classes: tuple[int, ...] | None = None,
        noise: float = 1.0,
        grey: float = 0.05,
        offset: float = 0.0,
    ) -> Draw:
        """``n`` photos; ``classes`` restricts the labels (label shift), ``noise`` scales the
        within-class spread and ``offset`` moves every embedding (covariate shift), ``grey`` is
        the greyscale share."""
        rng = np.random.default_rng(seed)
        labels = rng.choice(classes or range(len(CLASSES)), size=n)
        embeddings = self.centres[labels] + rng.normal(0, noise, (n, DIM)) + offset
        logits = embeddings @ self.head.T / DIM * 4
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        facts = []
        for i in range(n):
            width, height = int(rng.choice([500, 375, 333, 640])), int(rng.choice([375, 500]))
            digest = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()
            facts.append(ImageFacts(width, height, "JPEG", "RGB", bool(rng.random() < grey),
                                    30_000, digest))  # fmt: skip
        return Draw(probs.astype(np.float32), embeddings.astype(np.float32), facts)

    def reference(self, n: int = 300, seed: int = 1) -> Reference:
        d = self.draw(n, seed)
        return build_reference(d.probabilities, d.embeddings, d.facts, CLASSES, MODEL)


def records(draw: Draw, start: float = 1_800_000_000.0, model: ModelRef = MODEL, **kw):
    """One :class:`PredictionRecord` per drawn photo, a second apart from ``start``."""
    return [
        make_record(p, CLASSES, f, model=model, embedding=e, when=start + i, **kw)
        for i, (p, e, f) in enumerate(zip(draw.probabilities, draw.embeddings, draw.facts,
                                          strict=True))
    ]  # fmt: skip


def window_of(draw: Draw) -> Window:
    """The window a store would return for ``draw``'s records (no store in between)."""
    from petsml.monitoring.window import Sample

    n = len(draw.facts)
    sample = Sample(
        CLASSES, draw.probabilities, draw.embeddings,
        np.array([f.width for f in draw.facts]), np.array([f.height for f in draw.facts]),
        np.array([f.format for f in draw.facts]), np.array([f.greyscale for f in draw.facts]),
    )  # fmt: skip
    return Window(
        sample, np.array([f"id{i}" for i in range(n)]), np.arange(n, dtype=float),
        np.array([f.sha256 for f in draw.facts]), MODEL.name, MODEL.version,
    )  # fmt: skip


def one_record(i: int, tag: str, photo: bytes | None = None) -> PredictionRecord:
    d = Traffic(0).draw(1, seed=zlib.crc32(f"{i}-{tag}".encode()))
    return records(d, start=1_800_000_000.0 + i, photo=photo, source=tag)[0]


def _write(location: str, count: int, tag: str) -> None:
    from petsml.monitoring.store import open_store

    store = open_store(location, settings_with())
    for i in range(count):
        record = one_record(i, tag)
        store.append(record)
        print(record.id, flush=True)  # committed: the kill test holds the store to it
    store.close()


def fresh_postgres_database(server_uri: str, name: str) -> str:
    """A new empty database ``name`` on the PostgreSQL server at ``server_uri``; its URI."""
    import psycopg2

    dsn = "postgresql://" + server_uri.split("://", 1)[1]
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


if __name__ == "__main__":
    _write(sys.argv[1], int(sys.argv[2]), sys.argv[3])
