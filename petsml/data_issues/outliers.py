"""Outliers: photos unlike the rest of the data set, or that show no animal at all.

Two label-free signals, both from the featurize stage's one pass:

- **Low density** in embedding space: a photo's mean cosine distance to its
  ``data_issues.neighbours`` nearest photos (any split, any class). What counts as far is the
  data set's own: the robust z-score ``(d - median) / (1.4826 MAD)`` at least
  ``data_issues.outlier_z``; 3.5 is Iglewicz and Hoaglin's rule for the modified z-score,
  which holds whatever the distances' scale (a backbone's feature space, a data set's spread).
  The mean over several neighbours, not the nearest one, so two copies of one stray photo do
  not vouch for each other.
- **Not an animal**: the pretrained ImageNet classifier (``imagenet_top1``,
  ``imagenet_animal`` in the feature file: the probability on ImageNet's 398 animal classes)
  puts its top guess *and* most of its probability outside the animal classes. That only means
  "outlier" in a data set of animals, so the rule applies when most photos' top guess is an
  animal (pets: 99 %; generated stripes or a folder of cars: not applied, and the report says
  why). Real pets do trip it now and then (a pug dressed as a teddy bear): worth a look, never
  excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petsml.data.feature_file import ANIMAL_CLASSES
from petsml.data_issues.similarity import one_pass

MAD_TO_SD = 1.4826  # the MAD of a normal distribution times this is its standard deviation
MAJORITY = 0.5  # "most": of the photos (does the rule apply), of the probability (is it animal)


@dataclass
class Density:
    """Every photo's neighbour distance and robust z-score, and the data set's median/MAD."""

    distance: np.ndarray
    z: np.ndarray
    median: float
    mad: float
    neighbours: int


def density(embeddings: np.ndarray, k: int) -> Density:
    """:func:`robust_z` of each row's mean cosine distance to its ``k`` nearest other rows
    (fewer when the data set is smaller)."""
    found = one_pass(embeddings, k, np.inf)
    return robust_z(found.neighbour_distance, found.k)


def robust_z(distance: np.ndarray, neighbours: int) -> Density:
    """The neighbour distances' robust z-scores, against the data set's own median and MAD."""
    median = float(np.median(distance)) if distance.size else 0.0
    mad = float(np.median(np.abs(distance - median))) if distance.size else 0.0
    scale = MAD_TO_SD * mad
    z = (distance - median) / scale if scale > 0 else np.zeros_like(distance)
    return Density(distance, z, median, mad, neighbours)


@dataclass
class AnimalRule:
    applies: bool
    why: str
    flagged: np.ndarray  # per photo (all False when the rule does not apply)


def not_an_animal(top1: np.ndarray | None, animal: np.ndarray | None) -> AnimalRule:
    """Photos the ImageNet head reads as no animal, in a data set it reads as animals."""
    if top1 is None or animal is None:
        return AnimalRule(False, "the backbone ships no ImageNet classifier", np.zeros(0, bool))
    animal_top = np.asarray(top1) < ANIMAL_CLASSES
    share = float(animal_top.mean()) if animal_top.size else 0.0
    none = np.zeros(animal_top.size, bool)
    if share <= MAJORITY:
        return AnimalRule(
            False,
            f"the ImageNet head's top guess is an animal for {share:.0%} of the photos, not "
            "most: the data set is not one of animals, so no animal proves nothing",
            none,
        )
    flagged = ~animal_top & (np.asarray(animal) < MAJORITY)
    return AnimalRule(
        True,
        f"the ImageNet head's top guess is an animal for {share:.0%} of the photos; a photo "
        "whose top guess and most of whose probability are not is flagged",
        flagged,
    )
