"""The MLflow view the track stage links to orders strategies the way the project chooses them:
by validation accuracy (``register``, the sweep), never by test accuracy, which only judges."""

from __future__ import annotations

from petsml.tracking.gate import pick_best
from petsml.tracking.parent_run import SELECTION_METRIC, chosen_strategy, shared_view_state
from petsml.tracking.run_tags import PARENT_TAG


def test_the_shared_view_sorts_by_validation_accuracy_best_first():
    view = shared_view_state("abc123")
    assert view["orderByKey"] == "metrics.`val_accuracy`"
    assert view["orderByAsc"] is False
    assert view["searchFilter"] == f"tags.`{PARENT_TAG}` = 'abc123'"
    # test accuracy stays visible, as a column beside the sort key
    assert "metrics.`val_accuracy`" in view["selectedColumns"]
    assert "metrics.`test_accuracy`" in view["selectedColumns"]


def test_the_view_the_parent_run_and_the_registry_agree_on_the_winner():
    """A strategy best on test but not on validation is neither the view's top row, the parent
    run's chosen strategy nor the registry's candidate."""
    metrics = {
        "feature_extractor": {"val_accuracy": 0.80, "test_accuracy": 0.70},
        "svm_early": {"val_accuracy": 0.60, "test_accuracy": 0.90},
    }
    top_of_view = max(metrics, key=lambda s: metrics[s][SELECTION_METRIC])
    assert top_of_view == "feature_extractor"
    assert chosen_strategy(metrics) == top_of_view
    assert pick_best({s: m["val_accuracy"] for s, m in metrics.items()}) == top_of_view
