"""DVC stage entry points, one module per stage: ``python -m stages.<name>`` (see dvc.yaml).

Importing this package is a stage's first step: under a stage server (``pets run``, ``make
run``: :mod:`petsml.stage_server`) the stage hands itself to a warm fork there, which already
holds torch, scikit-learn, MLflow and the rest, and this process exits with its status.
"""

from petsml.stage_client import hand_off

hand_off()
