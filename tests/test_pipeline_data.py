"""The real data stages under `dvc repro`, fed by a loopback mirror of generated archives."""

from __future__ import annotations

import pandas as pd
import pytest

from petsml.testing.fakedata import MirrorServer, pack_archives
from petsml.testing.project import dvc, fake_data_params, make_project, set_params

pytestmark = [pytest.mark.slow(seconds=60), pytest.mark.integration]


@pytest.fixture(scope="module")
def archives(fake_archives):
    """The shared generated archives (tests/conftest.py), as this module unpacks them."""
    return fake_archives.dataset, fake_archives.folder, fake_archives.md5


def _ran(output: str) -> set[str]:
    return {
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    }


def test_data_stages_run_skip_and_rerun_only_what_changed(archives, tmp_path):
    ds, mirror, md5 = archives
    with MirrorServer(mirror) as server:
        project = make_project(tmp_path / "p", fake_data_params(server.url, md5))
        first = dvc(project, "repro", "validate", "split")
        assert _ran(first.stdout) == {"params", "download", "manifest", "validate", "split"}
        assert (project / "reports/validation/data_docs/index.html").exists()
        quarantine = pd.read_csv(project / "data/quarantine.csv", keep_default_na=False)
        planted = set(ds.undecodable) | set(ds.stray) | {f"{m}.jpg" for m in ds.missing}
        assert {f.split("/")[-1] for f in quarantine.file} == planted
        splits = {
            n: pd.read_csv(project / f"data/splits/{n}.csv") for n in ("train", "val", "test")
        }
        assert all(len(frame) for frame in splits.values())
        quarantined = set(quarantine.image_id)
        assert not quarantined & set(pd.concat(splits.values()).image_id)

        second = dvc(project, "repro", "validate", "split")
        assert _ran(second.stdout) == set()

        set_params(project, {"split.seed": 1234})
        third = dvc(project, "repro", "validate", "split")
        assert _ran(third.stdout) == {"params", "split"}  # params.yaml edits are checked
        assert len(server.requests) == 2  # the two archives, fetched once


def test_cut_connection_resumes_with_range(archives, tmp_path):
    _, mirror, md5 = archives
    size = (mirror / "images.tar.gz").stat().st_size
    cut = size - 1000  # past the downloader's first 64 KiB chunk, so bytes survive the cut
    with MirrorServer(mirror, cut_after={"images.tar.gz": cut}) as server:
        project = make_project(tmp_path / "p", fake_data_params(server.url, md5))
        dvc(project, "repro", "download")
        ranged = [r for path, r in server.requests if path.endswith("images.tar.gz") and r]
        assert ranged, server.requests
        start = int(ranged[0].removeprefix("bytes=").rstrip("-"))
        assert 0 < start <= cut
    assert (project / "data/raw/images").is_dir()


def test_wrong_md5_fails_without_a_done_output(archives, tmp_path):
    _, mirror, md5 = archives
    with MirrorServer(mirror) as server:
        params = fake_data_params(server.url, md5) | {"data.md5.images": "0" * 32}
        project = make_project(tmp_path / "p", params)
        result = dvc(project, "repro", "download", check=False)
    assert result.returncode != 0
    assert "md5" in (result.stdout + result.stderr).lower()
    assert not (project / "data/raw").exists()
    assert not (project / "data/downloads/images.tar.gz").exists()
    assert (
        not (project / "dvc.lock").exists() or "download" not in (project / "dvc.lock").read_text()
    )


def test_archive_with_parent_paths_is_refused(archives, tmp_path):
    ds, _, _ = archives
    mirror = tmp_path / "evil-mirror"
    md5 = pack_archives(ds.root, mirror, extra_members={"../evil.txt": b"escaped"})
    with MirrorServer(mirror) as server:
        project = make_project(tmp_path / "p", fake_data_params(server.url, md5))
        result = dvc(project, "repro", "download", check=False)
    assert result.returncode != 0
    assert "evil.txt" in result.stdout + result.stderr
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (project / "data/raw").exists()


def test_local_folder_mirror_works_for_validate_and_split(archives, tmp_path):
    _, mirror, md5 = archives
    project = make_project(tmp_path / "p", fake_data_params(str(mirror), md5))
    dvc(project, "repro", "validate", "split")
    assert (project / "data/splits/test.csv").exists()
