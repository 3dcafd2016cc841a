"""DVC stage `featurize`: run the frozen backbone once over every split and cache its features.

``model.early_block`` comes resolved from ``data/early_block.json`` (the advise stage's output),
so ``auto`` means the block the advice's probe curve found best.
"""

from petsml import paths
from petsml.advice.early_block import load_resolved
from petsml.config import load_params
from petsml.data.decode import DecodedImages
from petsml.data.split import load_split
from petsml.data.tensors import pick_device
from petsml.models.backbones import create_backbone
from petsml.stage import run_stage
from petsml.training.features import featurize_splits


def main() -> None:
    params = load_resolved(load_params())
    backbone = create_backbone(
        params.model.backbone,
        pretrained=params.model.pretrained,
        early_block=params.model.early_block,
        image_size=params.model.image_size,
    )
    split_ids = {
        name: load_split(paths.split_csv(name), params.data.task)["image_id"].tolist()
        for name in paths.SPLIT_NAMES
    }
    featurize_splits(
        backbone,
        DecodedImages.open(paths.DECODED),
        split_ids,
        paths.FEATURES,
        params.features.batch_size,
        pick_device(params.train.device),
        params.model.precision,
    )


if __name__ == "__main__":
    run_stage("featurize", main)
