"""DVC stage `validate`: Great Expectations checks on the manifest, quarantine, Data Docs."""

from petsml import paths
from petsml.config import load_params
from petsml.data.manifest import read_manifest
from petsml.data.sources import get_source
from petsml.data.validation import validate_manifest
from petsml.errors import PetsError
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.source",
    "validate",
    "serve.max_pixels",  # the one pixel limit: larger training photos are quarantined
)


def main() -> None:
    params = load_params()
    if not paths.MANIFEST.exists():
        raise PetsError(
            f"{paths.MANIFEST}: missing. Run the manifest stage first (dvc repro manifest)."
        )
    manifest = read_manifest(paths.MANIFEST)
    rules = get_source(params.data.source).rules(params.validate_params, params.data, manifest)
    validate_manifest(
        manifest, params.validate_params, paths.VALIDATION_REPORTS, paths.QUARANTINE, rules,
        max_pixels=params.serve.max_pixels,  # one pixel limit for training and serving
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("validate", main)
