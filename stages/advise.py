"""DVC stage `advise`: which strategy to ship, measured on a subsample before any training.

Writes ``reports/advice.json`` (the decision and every measurement), ``reports/advice.md``,
``reports/advice/`` (CSVs for `dvc plots show`, PNGs) and ``data/early_block.json`` (the block
``model.early_block`` resolves to, which `featurize` and `train` read).
"""

import logging
import time

from petsml import paths
from petsml.advice.advise import advise
from petsml.advice.early_block import resolve_early_block, write_resolved
from petsml.advice.report import summary, write_advice
from petsml.config import load_params
from petsml.data.decode import DecodedImages
from petsml.data.split import load_split
from petsml.data.tensors import pick_device
from petsml.stage import run_stage

log = logging.getLogger("petsml.stages.advise")


def main() -> None:
    started = time.perf_counter()
    params = load_params()
    train = load_split(paths.split_csv("train"), params.data.task)
    val = load_split(paths.split_csv("val"), params.data.task)
    device = pick_device(params.train.device)
    timings: dict[str, float] = {}
    advice = advise(params, DecodedImages.open(paths.DECODED), train, val, device, timings)
    seconds = time.perf_counter() - started
    log.info("advise: seconds by part: %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    write_advice(advice, paths.ADVICE, paths.ADVICE_MD, paths.ADVICE_PLOTS, seconds)
    write_resolved(params, resolve_early_block(params, paths.ADVICE))
    log.info("%s [%.0f s]", summary(advice), seconds)
    print(summary(advice))


if __name__ == "__main__":
    run_stage("advise", main)
