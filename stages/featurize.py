"""DVC stage `featurize`: the one frozen pass. Every photo of every split goes through the
pretrained backbone once; the penultimate vectors, every block's pooled output and the ImageNet
classifier's reading are cached in ``data/features`` for advise, the frozen strategies,
evaluation and the similar-photo index (:mod:`petsml.training.features`).
"""

from petsml import paths
from petsml.config import load_params
from petsml.data.decode import DecodedImages
from petsml.data.split import load_split
from petsml.data.tensors import inference_batch_size, pick_device
from petsml.models.backbones import create_backbone, imagenet_head
from petsml.stage import run_stage
from petsml.training.features import featurize_splits

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.task",
    "model.backbone",
    "model.pretrained",
    "model.image_size",
    "model.precision",
    "features",
    "train.device",
)


def main() -> None:
    params = load_params()
    backbone = create_backbone(
        params.model.backbone,
        pretrained=params.model.pretrained,
        early_block=-1,  # every block is kept: which one svm_early reads is decided later
        image_size=params.model.image_size,
    )
    split_ids = {
        name: load_split(paths.split_csv(name), params.data.task)["image_id"].tolist()
        for name in paths.SPLIT_NAMES
    }
    device = pick_device(params.train.device)
    featurize_splits(
        backbone,
        DecodedImages.open(paths.DECODED),
        split_ids,
        paths.FEATURES,
        inference_batch_size(params.features.batch_size, device),
        device,
        params.model.precision,
        imagenet_head=imagenet_head(backbone),
    )


if __name__ == "__main__":
    run_stage("featurize", main)
