"""Where every stage reads and writes, relative to the project root (DVC runs stages there).

``dvc.yaml`` names the same paths; keeping them here means code never builds them by hand.
"""

from pathlib import Path

DATA = Path("data")
DOWNLOADS = DATA / "downloads"  # archives and partial transfers; survives stage re-runs
RAW = DATA / "raw"  # extracted official layout: images/, annotations/
MANIFEST = DATA / "manifest.csv"
QUARANTINE = DATA / "quarantine.csv"
SPLITS = DATA / "splits"  # train.csv, val.csv, test.csv
DECODED = DATA / "decoded"  # images_u8.npy (N, S, S, 3) + index.csv
FEATURES = DATA / "features"  # <split>.npz: the one frozen pass (petsml.data.feature_file)
EMBEDDINGS = DATA / "embeddings"  # <strategy>.npz: a fine-tuned model's similar-photo index rows
EARLY_BLOCK = DATA / "early_block.json"  # model.early_block resolved (auto -> advice's best block)
MODELS = Path("models")  # models/<strategy>/
REPORTS = Path("reports")
VALIDATION_REPORTS = REPORTS / "validation"
ADVICE = REPORTS / "advice.json"  # which strategy to ship (advise stage)
ADVICE_MD = REPORTS / "advice.md"
ADVICE_PLOTS = REPORTS / "advice"  # probe_depth.csv/.png, learning_curve.csv/.png, backbones.csv
METRICS = REPORTS / "metrics.json"
MLFLOW_RUNS = REPORTS / "mlflow_runs.json"
REGISTRY_REPORT = REPORTS / "registry.json"
MLRUNS = Path("mlruns")

SPLIT_NAMES = ("train", "val", "test")
INDEX_SPLITS = ("train", "val")  # what the similar-photo index holds: never the test photos


def split_csv(name: str) -> Path:
    return SPLITS / f"{name}.csv"


def model_dir(strategy: str) -> Path:
    return MODELS / strategy
