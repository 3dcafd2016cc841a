"""The centre crop every model input is: ``model`` input size out of ``decode.size`` pixels."""

from __future__ import annotations

import math

# The default's centre crop: Lite0's 224 px of the 256 px decoded image.
CROP_RATIO = 224 / 256


def decode_size_for(input_size: int) -> int:
    """The ``decode.size`` whose centre crop to ``input_size`` keeps the default's crop ratio."""
    return math.ceil(input_size / CROP_RATIO - 1e-9)
