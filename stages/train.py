"""DVC stage `train@<strategy>`: one transfer strategy, trained on equal terms with the others.

Frozen-feature strategies fit a head on the cached features; the others train the network
from the decoded cache, checkpointing each epoch so ``--resume`` continues an interrupted run.
"""

import argparse

from petsml import paths
from petsml.advice.early_block import load_resolved
from petsml.config import FEATURE_STRATEGIES, STRATEGIES, load_params
from petsml.stage import run_stage

CHECKPOINTS = paths.DATA / "checkpoints"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("strategy", choices=STRATEGIES)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last epoch checkpoint when its params match",
    )
    args = parser.parse_args()
    params = load_resolved(load_params())  # model.early_block: auto -> the advised block
    out_dir = paths.model_dir(args.strategy)
    if args.strategy in FEATURE_STRATEGIES:
        from petsml.training.frozen import train_feature_strategy

        train_feature_strategy(args.strategy, params, out_dir)
    else:
        from petsml.training.finetune import train_strategy

        train_strategy(
            args.strategy,
            params,
            out_dir,
            resume=args.resume,
            checkpoint_dir=CHECKPOINTS / args.strategy,
        )


if __name__ == "__main__":
    run_stage("train", main)
