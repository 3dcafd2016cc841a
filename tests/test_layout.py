"""The test suite's own layout: shared helpers live in helper modules, never in test modules.

A test module that imports another runs (and collects) that module's fixtures and module-level
setup a second time under another name; helpers belong in ``tests/*.py`` not named ``test_*``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_test_modules(path: Path) -> set[str]:
    """The ``tests.test_*`` modules that ``path`` imports, wherever in the file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative imports are inside tests/
            base = node.module or "" if node.level == 0 else f"tests.{node.module or ''}"
            names += [base.rstrip(".")] + [f"{base}.{alias.name}" for alias in node.names]
    parts = [name.split(".") + [""] for name in names]
    return {f"tests.{p[1]}" for p in parts if p[0] == "tests" and p[1].startswith("test_")}


def test_no_test_module_imports_another():
    offenders = {
        path.name: sorted(imported)
        for path in sorted(TESTS.glob("test_*.py"))
        if (imported := imported_test_modules(path))
    }
    assert offenders == {}, f"move what these import into a helper module: {offenders}"


def test_the_check_sees_module_level_and_function_level_imports(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "from tests.test_pyfunc import make_tiny_model\n"
        "def test_x():\n    import tests.test_track\n    from .test_gate import N_TEST\n"
        "from tests.models import write_jpeg\nfrom tests import project, test_flows\n"
    )
    assert imported_test_modules(sample) == {
        "tests.test_pyfunc",
        "tests.test_track",
        "tests.test_gate",
        "tests.test_flows",
    }


def test_generated_docs_and_dvc_yaml_are_what_the_code_says():
    """docs/ARCHITECTURE.md's tables (`make docs`) and dvc.yaml's code deps and params
    (`make deps`) are written from the code; a stale copy fails here, in the fast tier."""
    from tools import docs_gen

    text = docs_gen.DOC.read_text()
    assert docs_gen.generate(text) == text, "docs/ARCHITECTURE.md is stale: run `make docs`"
    assert "`petsml/paths.py`" in text and "| `feature_extractor` | frozen" in text
