"""The model card (petsml.tracking.model_card) built from its inputs, without MLflow."""

from __future__ import annotations

import pandas as pd

from petsml.tracking.model_card import CardInputs, build_model_card, weak_spots

NAME = "oxford-pets-breed"


def _card(per_class: pd.DataFrame | None, pairs: pd.DataFrame | None = None) -> str:
    return build_model_card(
        CardInputs(
            model_name=NAME,
            version="4",
            task="breed",
            strategy="svm_early",
            run_id="abc123",
            metrics={
                "feature_extractor": {"val_accuracy": 0.8, "test_accuracy": 0.79},
                "svm_early": {"val_accuracy": 0.85, "test_accuracy": 0.78, "test_ece": 0.031},
            },
            backbone="efficientnet_lite0",
            git_commit="deadbeef",
            dvc_data_hash="0123abcd",
            split_sizes={"train": 2944, "val": 736, "test": 3669},
            per_class=per_class,
            confused_pairs=pairs,
        )
    )


def test_model_card_lists_every_strategy_weak_spots_and_limits():
    # the layout of reports/eval/<strategy>/per_class.csv (petsml.evaluation.evaluate)
    names = ["pug", "beagle", "Bengal", "Sphynx", "boxer", "samoyed", "Birman", "Persian"]
    per_class = pd.DataFrame(
        {
            "class_id": range(len(names)),
            "class_name": names,
            "support": [30, 30, 30, 30, 30, 30, 30, 0],  # Persian: not in this test set
            "correct": [27, 12, 24, 29, 15, 29, 13, 0],
            "accuracy": [0.9, 0.4, 0.8, 0.97, 0.5, 0.98, 0.45, 0.0],
            "precision": [0.9, 0.5, 0.7, 0.95, 0.6, 0.99, 0.4, float("nan")],
            "f1": [0.9, 0.44, 0.75, 0.96, 0.55, 0.985, 0.42, 0.0],
        }
    )
    assert list(weak_spots(per_class, 3)["class_name"]) == ["Birman", "beagle", "boxer"]
    pairs = pd.DataFrame(
        {
            "actual": [1, 4, 2],
            "actual_name": ["beagle", "boxer", "Bengal"],
            "predicted": [4, 1, 6],
            "predicted_name": ["boxer", "beagle", "Birman"],
            "count": [3, 7, 0],
        }
    )
    card = _card(per_class, pairs)
    assert card.startswith(f"# Model card: {NAME} version 4")
    assert "| **svm_early** (registered) | 0.8500 | 0.7800 | n/a | n/a | 0.0310 |" in card
    assert "| feature_extractor | 0.8000 | 0.7900 |" in card
    assert "| test | 3669 |" in card and "`deadbeef`" in card and "`0123abcd`" in card
    weak = card.split("## Weak spots")[1].split("## Intended use")[0]
    assert weak.index("Birman") < weak.index("beagle") < weak.index("boxer")
    assert "samoyed" not in weak and "Persian" not in weak
    assert weak.index("- boxer -> beagle: 7") < weak.index("- beagle -> boxer: 3")
    assert "Bengal -> Birman" not in weak  # zero-count pairs are not mistakes
    assert "## Intended use" in card and "## Limits" in card
    assert "not available" in _card(None).split("## Weak spots")[1]
