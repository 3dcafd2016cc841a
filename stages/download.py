"""DVC stage `download`: the only stage that touches the network, so everything after it is offline.

Archives are kept in ``data/downloads`` (not a DVC out) so a re-run with changed params, or after a
broken transfer, reuses or resumes them instead of fetching 800 MB again.
"""

from petsml import paths
from petsml.config import load_params
from petsml.data.download import fetch_dataset
from petsml.stage import run_stage


def main() -> None:
    data = load_params().data
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
