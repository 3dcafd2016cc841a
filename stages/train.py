"""DVC stage `train@<strategy>`: one transfer strategy, trained on equal terms with the others.

Frozen-feature strategies fit a head on the cached features; the others train the network
from the decoded cache, checkpointing each epoch so ``--resume`` continues an interrupted run.
Which is which, and the function that fits each, is the strategy's row in
:mod:`petsml.training.strategies`: this stage only dispatches through it. Train and validation
photos the data_issues stage excluded (``data/data_issues/excluded.csv``) are left out.
"""

import argparse
from pathlib import Path

from petsml import paths
from petsml.config import Params, load_params
from petsml.stage import run_stage

# The params.yaml keys this stage reads (its strategy's own section comes as a dep,
# data/strategies/<strategy>.json). dvc.yaml's params: list is written from this
# (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.task",
    "decode.size",
    "model",
    "features.batch_size",
    "train.seed",
    "train.epochs",
    "train.batch_size",
    "train.patience",
    "train.warmup_epochs",
    "train.compile",
    "train.tta",
    "train.device",
    "train.prefetch",
    "train.distributed",
)

CHECKPOINTS = paths.CHECKPOINTS


def train(
    strategy: str,
    params: Params,
    out_dir: Path,
    *,
    resume: bool = False,
    features_dir: Path = paths.FEATURES,
    splits_dir: Path = paths.SPLITS,
    decoded_dir: Path = paths.DECODED,
    checkpoints: Path = CHECKPOINTS,
    excluded_file: Path | None = paths.EXCLUDED,
) -> dict:
    """Fit ``strategy`` through the registry; returns the summary written to ``out_dir``."""
    from petsml.training import strategies
    from petsml.training.spec import Inputs

    inputs = Inputs(
        features_dir=features_dir,
        splits_dir=splits_dir,
        decoded_dir=decoded_dir,
        checkpoint_dir=checkpoints / strategy,
        excluded_file=excluded_file,
        resume=resume,
    )
    return strategies.fit(strategy, params, out_dir, inputs)


def main() -> None:
    from petsml.training import strategies

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("strategy", choices=strategies.names())
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last epoch checkpoint when its params match",
    )
    args = parser.parse_args()
    params = load_params()  # model.early_block: auto is resolved by the strategy registry
    train(args.strategy, params, paths.model_dir(args.strategy), resume=args.resume)


if __name__ == "__main__":
    run_stage("train", main)
