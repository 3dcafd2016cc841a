"""The README's commands run: every ``pets`` subcommand and flag, DVC stage, params key, make
target, module and file it names exists (tools/readme_check.py; pure, no process started)."""

from __future__ import annotations

import pytest

from petsml.cli import build_parser
from petsml.testing.project import REPO
from tools.readme_check import check

README = REPO / "README.md"
MAX_LINES = 200

# `pets` subcommands the README may name before they exist in petsml.cli: the CLI is being
# extended with them. This set must be empty once they exist (test_pending_... says when).
PENDING_SUBCOMMANDS: set[str] = set()


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def test_every_command_the_readme_names_exists(parser):
    problems = check(README.read_text(), parser, REPO, PENDING_SUBCOMMANDS)
    assert problems == [], "README.md names what does not exist:\n" + "\n".join(problems)


def test_the_readme_stays_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; details belong in docs/"


def test_pending_subcommands_do_not_exist_yet(parser):
    """Once a pending subcommand exists it must leave PENDING_SUBCOMMANDS, so the README's use of
    it is checked (flags included) like every other."""
    subparsers = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    landed = PENDING_SUBCOMMANDS & set(subparsers.choices)
    assert not landed, f"remove {sorted(landed)} from PENDING_SUBCOMMANDS: they exist now"


GOOD = """
```bash
pets predict photo.jpg --json   # a comment naming pets nosuch is not a command
dvc repro train@feature_extractor
make test
python -m benchmarks.accuracy
```
`model.backbone`, `dvc exp run -S train.epochs=3`, [advice](docs/ADVICE.md), `model.pt`
"""


def test_a_valid_text_passes(parser):
    assert check(GOOD, parser, REPO) == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("`pets frobnicate photo.jpg`", "pets frobnicate"),
        ("```bash\npets predict photo.jpg --frobnicate\n```", "--frobnicate"),
        ("`pets export champion --format onnx --int9 --out edge/`", "--int9"),
        ("```bash\ndvc repro frobnicate\n```", "frobnicate"),
        ("`dvc status train@x featurise`", "featurise"),
        ("`model.backbones`", "model.backbones"),
        ("```bash\ndvc exp run -S train.epoch=3\n```", "train.epoch"),
        ("`make frobnicate`", "make frobnicate"),
        ("```bash\npython -m benchmarks.frobnicate\n```", "benchmarks.frobnicate"),
        ("`python benchmarks/frobnicate.py`", "benchmarks/frobnicate.py"),
        ("see [the guide](docs/FROBNICATE.md)", "docs/FROBNICATE.md"),
    ],
)
def test_the_checker_catches_what_does_not_exist(parser, text, named):
    problems = check(text, parser, REPO)
    assert len(problems) == 1 and named in problems[0], problems


def test_a_pending_subcommand_passes_only_while_it_is_pending(parser):
    text = "`pets frobnicate --anything`"
    assert check(text, parser, REPO, {"frobnicate"}) == []
    assert check(text, parser, REPO) != []


def results_table(markdown: str) -> str:
    """The first Markdown table whose header starts ``| strategy | val acc``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| strategy | val acc"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def test_the_results_table_is_the_same_in_the_readme_and_the_benchmarks():
    """Re-measured figures replace both in place; neither may drift from the other."""
    benchmarks = (REPO / "docs" / "BENCHMARKS.md").read_text()
    assert results_table(README.read_text()) == results_table(benchmarks)
    assert results_table("x\n| strategy | val acc |\n| --- | --- |\n| a | 1 |\n\nafter") == (
        "| strategy | val acc |\n| --- | --- |\n| a | 1 |"
    )
