"""The 37 official Oxford-IIIT Pet breeds and the dataset's naming rules.

Class ids follow ``annotations/list.txt`` (1..37 there, 0..36 here). Cat breeds are written
with a capital first letter, dog breeds in lower case: the dataset's own species rule.
"""

from __future__ import annotations

import re

BREEDS: tuple[str, ...] = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher",
    "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx",
    "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
)  # fmt: skip
CLASS_ID = {name: index for index, name in enumerate(BREEDS)}
SPECIES = ("cat", "dog")
_ID_SUFFIX = re.compile(r"_\d+$")


def breed_of(image_id: str) -> str:
    """``Egyptian_Mau_12`` -> ``Egyptian_Mau``: the breed is the id without its number."""
    return _ID_SUFFIX.sub("", image_id)


def species_of(name: str) -> str:
    """The dataset's rule: capitalised names are cats, lower-case names are dogs."""
    return "cat" if name[:1].isupper() else "dog"


def labels_for(task: str) -> tuple[str, ...]:
    """Class names, index = label, for a task (``breed`` or ``species``)."""
    if task == "breed":
        return BREEDS
    if task == "species":
        return SPECIES
    raise ValueError(f"unknown task {task!r}: use 'breed' or 'species' (params.yaml data.task)")
