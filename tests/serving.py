"""Loading a logged model where the project is not installed: only the model's requirements.

``clean_site`` builds a site-packages of the requirement closure; ``isolated_predict`` loads
the model in ``python -I -S`` with only that on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def requirement_closure(names) -> set[str]:
    """The distributions ``names`` need, transitively (extras left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def clean_site(allowed: set[str], dest: Path) -> Path:
    """A site-packages holding only the ``allowed`` distributions (symlinks into the venv's)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    dest.mkdir(parents=True, exist_ok=True)
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in allowed:
            continue
        base = Path(dist.locate_file(""))
        tops = {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}
        for top in tops - {"__pycache__"}:
            if (base / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(base / top)
    return dest


# Runs with -I -S and only ``clean_site`` on its path: no cwd, no PYTHONPATH, no .pth files (so
# not the editable petsml install), and of the venv only the distributions the model requires.
ISOLATED_PREDICT = r"""
import base64, json, sys
sys.path.append(sys.argv[1])
try:
    import petsml
except ImportError:
    pass
else:
    sys.exit(f"petsml importable from {petsml.__file__}: the check would prove nothing")
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[2])
b64 = base64.b64encode(open(sys.argv[3], "rb").read()).decode()
row = model.predict(pd.DataFrame({"image": [b64]})).to_dict(orient="records")[0]
import petsml
print("RESULT" + json.dumps({"row": row, "petsml": petsml.__file__}))
"""


def isolated_predict(model_uri: str, image: Path, cwd: Path, tracking_uri: str, site) -> dict:
    """Load and predict with only ``site`` importable (not the checkout, not the venv)."""
    # no PYTHON* and no MLFLOW_* left by earlier in-process tests (mlflow.set_registry_uri
    # writes MLFLOW_REGISTRY_URI): only the store named here may answer models:/ URIs
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_REGISTRY_URI"] = tracking_uri
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", ISOLATED_PREDICT, str(site), model_uri, str(image)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def model_requirements(model_uri: str) -> list[str]:
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    return [line.split("==")[0] for line in (local / "requirements.txt").read_text().split()]


def log_champion(project: Path, name: str, expected_uri: str) -> None:
    """In ``project`` as the cwd: log the tiny model, register it as ``name``, alias it champion.

    The store is the project's own (``store.configure(".")``), which must be ``expected_uri``.
    """
    import mlflow
    from mlflow import MlflowClient

    from petsml.tracking import store
    from petsml.tracking.pyfunc import log_pyfunc_model
    from tests.models import make_tiny_model

    model_pt = make_tiny_model(project / "models" / "finetune_top" / "model.pt")
    uri = store.configure(".")
    assert uri == expected_uri
    experiment_id = store.get_or_create_experiment("pets-portable-test", uri)
    with mlflow.start_run(experiment_id=experiment_id):
        log_pyfunc_model(model_pt, registered_model_name=name)
    MlflowClient(uri).set_registered_model_alias(name, "champion", "1")
