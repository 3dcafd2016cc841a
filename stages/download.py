"""DVC stage `download`: the only stage that touches the network, so everything after it is offline.

Archives are kept in ``data/downloads`` (not a DVC out) so a re-run with changed params, or after a
broken transfer, reuses or resumes them instead of fetching 800 MB again. A source that is not
downloaded (``data.source: folder``) leaves only a note in ``data/raw``: the photos are read from
``data.folder``, which the stages that read them depend on.
"""

from petsml import paths
from petsml.config import OFFICIAL_SOURCE, load_params
from petsml.data.download import fetch_dataset
from petsml.io import atomic_dir
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.base_url",
    "data.md5",
    "data.source",
    "data.retries",
    "data.timeout_s",
)

NOT_DOWNLOADED = "data.source reads its photos from data.folder: nothing is downloaded.\n"


def main() -> None:
    data = load_params().data
    if data.source != OFFICIAL_SOURCE:  # only the official archives are downloaded
        with atomic_dir(paths.RAW) as tmp:
            (tmp / "NOT_DOWNLOADED.txt").write_text(NOT_DOWNLOADED)
        return
    fetch_dataset(
        data.base_url,
        data.md5.model_dump(),
        paths.DOWNLOADS,
        paths.RAW,
        retries=data.retries,
        timeout_s=data.timeout_s,
    )


if __name__ == "__main__":
    run_stage("download", main)
