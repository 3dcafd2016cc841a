"""Feedback is checked before it is stored: the prediction must be on record and the label one
of the answering model's classes; a typo gets the close class names (a real SQLite store)."""

from __future__ import annotations

import numpy as np
import pytest

from petsml.monitoring.feedback_check import UnknownLabelError, record_feedback
from petsml.monitoring.record import ModelRef
from petsml.monitoring.recorder import Recorder
from petsml.monitoring.store import UnknownPredictionError
from petsml.testing.fakedata import class_image
from tests.monitoring import settings_with

CLASSES = ("Bengal", "Birman", "beagle", "pug")


@pytest.fixture
def recorded(tmp_path):
    import io

    settings = settings_with(store=str(tmp_path / "p.sqlite"))
    recorder = Recorder.open(settings, ModelRef("oxford-pets-breed", "2", "champion"), CLASSES)
    out = io.BytesIO()
    class_image(1, np.random.default_rng(0), (40, 30)).save(out, format="JPEG")
    prediction_id = recorder.record(np.array([0.7, 0.1, 0.1, 0.1], np.float32), out.getvalue())
    yield recorder.store, prediction_id
    recorder.store.close()


def test_feedback_on_a_recorded_answer_is_stored_with_its_prediction(recorded):
    store, prediction_id = recorded
    stored = record_feedback(store, f" {prediction_id} ", " pug ", source="cli")
    assert (stored.label, stored.predicted, stored.correct) == ("pug", "Bengal", False)
    assert (stored.model_name, stored.model_version) == ("oxford-pets-breed", "2")
    assert [f.prediction_id for f in store.feedback()] == [prediction_id]


def test_an_unknown_id_or_class_is_refused_and_nothing_is_stored(recorded):
    store, prediction_id = recorded
    with pytest.raises(UnknownPredictionError, match="no prediction 'nope'.*monitor.log"):
        record_feedback(store, "nope", "pug", source="cli")
    with pytest.raises(UnknownLabelError, match="did you mean Bengal, Birman"):
        record_feedback(store, prediction_id, "b", source="cli")
    assert store.feedback() == []
