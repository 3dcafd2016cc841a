"""What a serving process calls after each answer: :meth:`Recorder.record`.

Recording must never cost the user an answer: a store that cannot be written (disk full, the
PostgreSQL server gone) logs one warning per minute and the prediction is still returned; the
failures are counted (:attr:`Recorder.failures`) for the health page. The photo is kept only
when ``monitor.keep_photos`` is on.

The record is written synchronously, before the answer goes out: the answer can then carry the
record's id (for "wrong, it is X" feedback) knowing it is committed, and a server killed a moment
later loses nothing it had answered. ``benchmarks/monitor.py`` measures what that costs
(docs/MONITORING.md: the p95 added latency against the 5 ms target).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from petsml.monitoring.record import ImageFacts, ModelRef, image_facts, make_record
from petsml.monitoring.settings import MonitorSettings
from petsml.monitoring.store import MonitorStore, open_store

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0


class Recorder:
    """Records the predictions of one served model into a store (see the module docstring)."""

    def __init__(
        self,
        store: MonitorStore,
        model: ModelRef,
        class_names: list[str] | tuple[str, ...],
        settings: MonitorSettings | None = None,
        source: str = "",
    ):
        self.store = store
        self.model = model
        self.class_names = tuple(str(name) for name in class_names)
        self.settings = settings or store.settings
        self.source = source
        self.failures = 0
        self._last_warning = -float("inf")
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        settings: MonitorSettings,
        model: ModelRef,
        class_names: list[str] | tuple[str, ...],
        source: str = "",
    ) -> Recorder | None:
        """A recorder on ``settings.store``, or None when ``monitor.log`` is off."""
        if not settings.log:
            return None
        return cls(open_store(settings.store, settings), model, class_names, settings, source)

    def record(
        self,
        probabilities: np.ndarray,
        image: bytes | ImageFacts,
        embedding: np.ndarray | None = None,
        decoded: np.ndarray | None = None,
        source: str | None = None,
    ) -> str | None:
        """Commit one prediction; returns its id, or None if it could not be recorded.

        ``probabilities``: the model's softmax over its ``class_names``; ``image``: the encoded
        photo as received (its facts are read from the header, its hash from the bytes) or
        facts already read; ``embedding``: the pooled penultimate vector of the same pass;
        ``decoded``: the model's decoded (H, W, 3) uint8 photo, for the greyscale check.
        """
        try:
            facts = image if isinstance(image, ImageFacts) else image_facts(image, decoded)
            keep = self.settings.keep_photos and isinstance(image, bytes | bytearray)
            record = make_record(
                probabilities, self.class_names, facts, model=self.model, embedding=embedding,
                source=self.source if source is None else source,
                photo=bytes(image) if keep else None,
            )  # fmt: skip
            self.store.append(record)
            return record.id
        except Exception as error:  # noqa: BLE001 - bad input, a full disk, a driver's errors
            self._failed(error)
        return None

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self.failures += 1
            now = time.monotonic()
            if now - self._last_warning < WARN_EVERY_S:
                return
            self._last_warning = now
        log.warning(
            "monitoring: a prediction was not recorded (%d so far): %s: %s",
            self.failures, type(error).__name__, error,
        )  # fmt: skip

    def close(self) -> None:
        self.store.close()
