"""``python -m petsml.cli``: the same as ``pets``."""

from petsml.cli import main

main()
