"""The layer contracts in pyproject.toml hold, and they do catch an upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs lint-imports

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(LINT.parent), "PYTHONPATH": str(root), "HOME": str(root)},
    )


def _copy_code(dest: Path) -> Path:
    for name in ("petsml", "stages", "pipelines"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


@pytest.fixture(scope="module")
def lint_available():
    if not LINT.exists():
        pytest.skip(f"lint-imports not installed beside {sys.executable} (pip install -e '.[dev]')")


def test_the_package_keeps_its_layer_contracts(lint_available):
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("petsml/data/split.py", "from petsml.tracking import store  # noqa"),
        ("petsml/training/frozen.py", "import mlflow  # noqa"),
        ("petsml/models/classifier.py", "from petsml.training import heads  # noqa"),
    ],
)
def test_an_upward_or_forbidden_import_breaks_the_contracts(lint_available, tmp_path, module, line):
    root = _copy_code(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = _lint(root)
    assert result.returncode != 0, f"{module}: `{line}` passed the contracts"
    assert "BROKEN" in result.stdout
