"""DVC stage `advise`: which strategy to ship, measured on the cached features before training.

Writes ``reports/advice.json`` (the decision and every measurement), ``reports/advice.md``,
``reports/advice/`` (CSVs for `dvc plots show`, PNGs) and ``data/early_block.json`` (the block
``model.early_block`` resolves to, which `train` reads). Reads ``data/features``: no photo goes
through the backbone again (a candidate in ``advise.backbones`` is the one exception). Photos the
data_issues stage excluded (``data/data_issues/excluded.csv``) are left out, as train leaves them.
"""

import logging
import time

from petsml import paths
from petsml.advice.advice_files import summary, write_advice
from petsml.advice.advise import advise
from petsml.config import load_params
from petsml.data.feature_file import read_features
from petsml.data.split import load_fit_split
from petsml.models.early_block import resolve_early_block, write_resolved
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.task",
    "model",
    "features.batch_size",
    "train.device",
    "feature_extractor",
    "svm_early",
    "advise",
)

log = logging.getLogger("petsml.stages.advise")


def _candidates(params):
    """The frozen pass other backbones need (only when ``advise.backbones`` lists any)."""
    if not [name for name in params.advise.backbones if name != params.model.backbone]:
        return None
    from petsml.advice.probe import candidate_features
    from petsml.data.decode import DecodedImages
    from petsml.data.tensors import pick_device

    images = DecodedImages.open(paths.DECODED)
    return candidate_features(params, images, pick_device(params.train.device))


def main() -> None:
    started = time.perf_counter()
    params = load_params()
    # less the photos the data_issues stage excluded, as train fits on
    train = load_fit_split(paths.SPLITS, "train", params.data.task, paths.EXCLUDED)
    val = load_fit_split(paths.SPLITS, "val", params.data.task, paths.EXCLUDED)
    timings: dict[str, float] = {}
    advice = advise(
        params, train, val,
        read_features(paths.FEATURES, "train"), read_features(paths.FEATURES, "val"),
        _candidates(params), timings,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    log.info("advise: seconds by part: %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    write_advice(advice, paths.ADVICE, paths.ADVICE_MD, paths.ADVICE_PLOTS, seconds)
    write_resolved(params, resolve_early_block(params, paths.ADVICE))
    log.info("%s [%.0f s]", summary(advice), seconds)
    print(summary(advice))


if __name__ == "__main__":
    run_stage("advise", main)
