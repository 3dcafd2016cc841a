"""A project folder (mlruns/ included) keeps working after it is copied or moved.

The registry's champion is logged from the project root with the project's own relative store
(``sqlite:///mlruns/mlflow.db``); the folder is then copied, the original renamed away, and the
champion is loaded from the copy in an interpreter that has only the model's requirements.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from petsml.data.breeds import BREEDS
from tests.models import check_row, sample_photo
from tests.serving import clean_site, isolated_predict, requirement_closure

pytestmark = [pytest.mark.slow(seconds=30), pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
NAME = "oxford-pets-breed"
RELATIVE_URI = "sqlite:///mlruns/mlflow.db"
LOCATIONS = (  # every stored artifact location (MLflow's unused "Default" experiment aside)
    "SELECT artifact_location FROM experiments WHERE name != 'Default'",
    "SELECT artifact_uri FROM runs",
    "SELECT artifact_location FROM logged_models",
    "SELECT storage_location FROM model_versions",
)


def _stored_locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [value for query in LOCATIONS for (value,) in connection.execute(query) if value]


def _log_in_a_fresh_process(project: Path) -> list[str]:
    """Log the champion as a stage would: its own process, the project root as its cwd.

    MLflow caches SQLite engines by URI string for the life of a process, so a relative URI
    opened in an earlier test's folder would still point there; a stage never changes folder.
    Returns the logged model's requirement names.
    """
    code = (
        "import json, sys; from pathlib import Path; "
        "from tests.serving import log_champion, model_requirements; "
        f"log_champion(Path('.').resolve(), {NAME!r}, {RELATIVE_URI!r}); "
        f"print(json.dumps(model_requirements('models:/{NAME}@champion')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_champion_loads_from_a_copied_project_after_the_original_is_gone(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    pinned = _log_in_a_fresh_process(project)
    monkeypatch.chdir(tmp_path)

    locations = _stored_locations(project / "mlruns" / "mlflow.db")
    assert locations and not [x for x in locations if str(tmp_path) in x], locations

    copy = tmp_path / "somewhere" / "else" / "pets"
    shutil.copytree(project, copy, symlinks=True)
    project.rename(tmp_path / "original-gone")
    site = clean_site(requirement_closure(pinned), tmp_path / "site-packages")
    out = isolated_predict(
        f"models:/{NAME}@champion", sample_photo(tmp_path), copy, RELATIVE_URI, site
    )
    check_row(out["row"], BREEDS)
    assert out["petsml"].startswith(str(copy / "mlruns" / "artifacts")), out["petsml"]
