#!/usr/bin/env bash
# The GPU run, ready to go: one script, about 5 minutes on one H100/H200, no network.
#
# Prints, after a machine header (GPU, driver, CPU and flags, torch/torchvision/timm versions):
#   1. ResNet-50 full fine-tuning images/s from the uint8 cache: the project's path
#      (train_epoch_full, bf16 autocast, channels_last) against the tutorial DataLoader path
#      (PIL + torchvision transforms, fp32 NCHW) and the true model-only ceiling (the project's
#      very step on one batch already on the GPU), without and with torch.compile, with the
#      project's peak GPU memory (benchmarks/finetune_full.py);
#   2. EfficientNet-Lite0 frozen feature extraction images/s, same three paths
#      (benchmarks/extraction.py).
# Weights are random (speed does not depend on them); photos are synthetic JPEGs made once.
# Needs Python with torch, torchvision, timm and this project's requirements.
#
#   bash benchmarks/gpu.sh                       # on the GPU machine
#   BACKBONE=test_efficientnet EXTRACT_BACKBONE=test_efficientnet DEVICE=cpu BATCH=4 IMAGES=12 \
#     EPOCHS=1 COMPILE=off SIZES="--image-size 32 --decode-size 40" bash benchmarks/gpu.sh  # CPU
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
BACKBONE=${BACKBONE:-tv:resnet50}           # full fine-tuning
EXTRACT_BACKBONE=${EXTRACT_BACKBONE:-efficientnet_lite0}
BATCH=${BATCH:-256}
IMAGES=${IMAGES:-4096}                      # synthetic photos (made once, used by both parts)
EPOCHS=${EPOCHS:-2}                         # timed epochs per path, after one warm-up epoch
COMPILE=${COMPILE:-"off on"}                # torch.compile variants of the fine-tuning part
SIZES=${SIZES:-}                            # e.g. "--image-size 32 --decode-size 40" for tiny runs
WORKERS=${WORKERS:-$(nproc)}

echo "== machine: $(date -u +%Y-%m-%dT%H:%MZ), $(hostname), load $(cut -d' ' -f1-3 /proc/loadavg)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader || true
fi
"$PYTHON" -c 'import sys, torch, torchvision, timm
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), torchvision {torchvision.__version__}, timm {timm.__version__}")'

PHOTOS=$(mktemp -d "${TMPDIR:-/tmp}/pets-gpu-XXXXXX")
trap 'rm -rf "$PHOTOS"' EXIT
PYTHONPATH=benchmarks "$PYTHON" -c "from pathlib import Path; from photos import synthetic_photos
synthetic_photos(Path('$PHOTOS'), $IMAGES)"

for compile in $COMPILE; do
  flag=""
  [ "$compile" = on ] && flag="--compile"
  echo
  echo "== $BACKBONE full fine-tuning, torch.compile $compile"
  "$PYTHON" -m benchmarks.finetune_full "$PHOTOS" --device "$DEVICE" --backbone "$BACKBONE" \
    --batch-size "$BATCH" --epochs "$EPOCHS" --workers "$WORKERS" $flag $SIZES
done

echo
echo "== $EXTRACT_BACKBONE frozen feature extraction"
"$PYTHON" -m benchmarks.extraction "$PHOTOS" --device "$DEVICE" --backbone "$EXTRACT_BACKBONE" \
  --random-init --batch-size "$BATCH" --workers "$WORKERS" $SIZES
