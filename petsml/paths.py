"""Where every stage reads and writes, relative to the project root (DVC runs stages there).

The one catalog of pipeline paths: ``dvc.yaml`` names the same paths, and no other module
spells one (``tests/test_layout.py`` looks for path literals elsewhere).
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
STRATEGY_SETTINGS = DATA / "strategies"  # <strategy>.json: its checked params.yaml section
PARAMS_OK = DATA / "params.ok"  # the params stage's constant marker
CHECKPOINTS = DATA / "checkpoints"  # <strategy>/last.pt: a trained strategy's resumable epoch
DATA_ISSUES = DATA / "data_issues"  # excluded.csv, label_issues.csv (data_issues stage)
EXCLUDED = DATA_ISSUES / "excluded.csv"  # train/val rows advise and train leave out
LABEL_ISSUES = DATA_ISSUES / "label_issues.csv"  # likely label errors, most doubtful first
EARLY_BLOCK = DATA / "early_block.json"  # model.early_block resolved (auto -> advice's best block)
MODELS = Path("models")  # models/<strategy>/
REPORTS = Path("reports")
VALIDATION_REPORTS = REPORTS / "validation"
ADVICE = REPORTS / "advice.json"  # which strategy to ship (advise stage)
ADVICE_MD = REPORTS / "advice.md"
ADVICE_PLOTS = REPORTS / "advice"  # probe_depth.csv/.png, learning_curve.csv/.png, backbones.csv
DATA_ISSUES_JSON = REPORTS / "data_issues.json"  # what is wrong with the data (data_issues)
DATA_ISSUES_MD = REPORTS / "data_issues.md"
DATA_ISSUES_HTML = REPORTS / "data_issues.html"  # thumbnails inline: one offline file
DATA_ISSUES_COUNTS = REPORTS / "data_issues_counts.json"  # the counts: `dvc metrics show`
METRICS = REPORTS / "metrics.json"  # every strategy's headline metrics (evaluate)
STRATEGY_METRICS = REPORTS / "metrics"  # <strategy>.json: one row each in `dvc metrics show`
EVAL = REPORTS / "eval"  # <strategy>/: predictions, per-class scores, figures
PLOTS = REPORTS / "plots"  # CSVs `dvc plots show` renders
COMPARISON_JSON = REPORTS / "comparison.json"  # the compare stage's contract
COMPARISON_MD = REPORTS / "comparison.md"
COMPARISON_HTML = REPORTS / "comparison.html"  # figures inline: one offline file
COMPARISON_PLOTS = REPORTS / "comparison"  # strategies.csv (dvc plots) and the PNGs
MLFLOW_STORE = REPORTS / "mlflow_store.json"  # which MLflow store holds the runs (mlflow_store)
MLFLOW_RUNS = REPORTS / "mlflow_runs.json"
REGISTRY_REPORT = REPORTS / "registry.json"
MLRUNS = Path("mlruns")
MONITORING_REPORTS = REPORTS / "monitoring"  # <window>.json and .html: drift verdicts

SPLIT_NAMES = ("train", "val", "test")
INDEX_SPLITS = ("train", "val")  # what the similar-photo index holds: never the test photos


def split_csv(name: str) -> Path:
    return SPLITS / f"{name}.csv"


def strategy_settings(strategy: str) -> Path:
    return STRATEGY_SETTINGS / f"{strategy}.json"


def model_dir(strategy: str) -> Path:
    return MODELS / strategy


def eval_dir(strategy: str) -> Path:
    return EVAL / strategy


def predictions_csv(strategy: str) -> Path:
    """One row per test photo of ``strategy``'s evaluation (image_id, label, pred, correct)."""
    return eval_dir(strategy) / "predictions.csv"
