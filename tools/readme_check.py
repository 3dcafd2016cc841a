"""Every command, stage, params key, make target and file the README names exists in the code.

A README whose commands do not run is worse than none: the first one that fails loses the
reader. This reads a Markdown text (no process is started) and checks, in its fenced code
blocks and inline code spans, and in its links:

- ``pets <subcommand> [--flag ...]`` against a ``pets`` argument parser (passed in, so a test
  can name subcommands that are still being added as ``pending``);
- ``dvc repro|status|dag <stage>`` and ``<stage>@<item>`` against the stages of dvc.yaml;
- params keys written like ``model.backbone`` (also in ``-S key=value``) against params.yaml;
- ``make <target>`` against the Makefile's targets;
- ``python -m benchmarks.x`` (and ``pipelines.``, ``stages.``, ``tools.``, ``petsml.``),
  ``python some/file.py`` and repository paths (``docs/X.md``, ``benchmarks/gpu.sh``, a
  link's target) against the checkout.

    python -m tools.readme_check [FILE]   # default README.md; exit 1 naming each problem
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# fenced blocks of these languages hold commands; yaml/text/mermaid blocks do not
COMMAND_LANGUAGES = {"", "bash", "sh", "shell", "console"}
# a command starts a line, or follows a shell separator, `$ `, or an env assignment
START = r"(?:^|[\s;&|(])"
PETS = re.compile(START + r"pets((?:\s+[^\s;&|#>]+)*)")
DVC_TARGET = re.compile(START + r"dvc\s+(?:repro|status|dag)((?:\s+[^\s;&|#>]+)*)")
MAKE = re.compile(START + r"make\s+([A-Za-z][\w-]*)")
PY_MODULE = re.compile(START + r"python3?\s+-m\s+([\w.]+)")
FOREACH_ITEM = re.compile(r"(?<![\w/.-])([a-z_]+)@([a-z_<>]+)")
# checked paths start with a folder or file of the checkout; generated ones (data/, reports/,
# models/, mlruns/) are the pipeline's outputs and are not
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:docs|benchmarks|tools|tests|petsml|stages|pipelines|demo)/[\w./-]*[\w/]"
    r"|(?:params|dvc|prefect)\.yaml|pyproject\.toml|Makefile|README\.md)"
)
# a dotted name not followed by a call or a further part: `mlflow.pyfunc.load_model(...)` is code
KEY = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?![\w.(])")
FILE_SUFFIXES = {
    "pt", "pth", "onnx", "json", "csv", "md", "yaml", "yml", "png", "html", "py", "txt", "jpg",
    "db", "lock", "gz", "toml", "sh",
}  # fmt: skip
PLACEHOLDER = re.compile(r"[<>*{}…]|\.\.\.")
PY_PACKAGES = ("benchmarks", "pipelines", "stages", "tools", "petsml", "tests", "demo")


def code_texts(text: str) -> list[str]:
    """The command-like code of a Markdown text: fenced shell blocks (a line ending in ``\\``
    joined with the next) and inline code spans outside fences."""
    found = []
    for language, body in FENCE.findall(text):
        if language in COMMAND_LANGUAGES:
            lines = body.replace("\\\n", " ").splitlines()
            found += [re.split(r"(?:^|\s)#", line)[0] for line in lines]  # comments dropped
    outside = FENCE.sub("", text)
    found += SPAN.findall(outside)
    return found


def _segment(words: str) -> list[str]:
    """The words of one command, up to a comment."""
    out = []
    for word in words.split():
        if word.startswith("#"):
            break
        out.append(word)
    return out


def pets_problems(code: str, parser: argparse.ArgumentParser, pending: frozenset[str]):
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for match in PETS.finditer(code):
        words = _segment(match.group(1))
        if not words:
            continue
        first = words[0]
        if first.startswith("-"):
            if first.split("=")[0] not in parser._option_string_actions:
                yield f"`pets {first}`: no such option of pets"
            continue
        if PLACEHOLDER.search(first) or not re.fullmatch(r"[a-z][\w-]*", first):
            continue
        if first in pending:
            continue
        sub = subparsers.choices.get(first)
        if sub is None:
            yield f"`pets {first}`: no such subcommand"
            continue
        for word in words[1:]:
            flag = word.strip("[]()'\"").split("=")[0]
            if flag.startswith("--") and flag not in sub._option_string_actions:
                yield f"`pets {first} {flag}`: no such option"


def dvc_problems(code: str, stages: dict):
    for match in DVC_TARGET.finditer(code):
        for word in _segment(match.group(1)):
            if word.startswith("-") or PLACEHOLDER.search(word):
                continue
            name = word.split("@")[0]
            if name not in stages:
                yield f"`dvc ... {word}`: no stage {name!r} in dvc.yaml"
    for name, item in FOREACH_ITEM.findall(code):
        if name in stages and "foreach" not in stages[name]:
            yield f"`{name}@{item}`: stage {name!r} of dvc.yaml has no foreach"


def _has_key(params: dict, dotted: str) -> bool:
    node: object = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def key_problems(code: str, params: dict):
    for dotted in KEY.findall(code):
        head, *rest = dotted.split(".")
        if head not in params or _has_key(params, dotted):
            continue
        if rest[-1] in FILE_SUFFIXES:  # model.pt, train.py: a file name, not a key
            continue
        yield f"`{dotted}`: no such key in params.yaml"


def make_targets(makefile: str) -> set[str]:
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, re.M))
    for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M):
        targets |= set(line.split())
    return targets


def make_problems(code: str, targets: set[str]):
    for target in MAKE.findall(code):
        if target not in targets:
            yield f"`make {target}`: no such target in the Makefile"


def _exists(root: Path, path: str) -> bool:
    return (root / path.rstrip("/")).exists()


def path_problems(code: str, root: Path):
    for module in PY_MODULE.findall(code):
        if module.split(".")[0] not in PY_PACKAGES:
            continue
        base = module.replace(".", "/")
        if not any(_exists(root, p) for p in (f"{base}.py", f"{base}/__init__.py")):
            yield f"`python -m {module}`: no such module in the checkout"
    for path in REPO_PATH.findall(code):
        if PLACEHOLDER.search(path):
            continue
        if not _exists(root, path):
            yield f"`{path}`: no such file in the checkout"


def link_problems(text: str, base: Path):
    """Relative links, resolved from ``base`` (the folder of the document)."""
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if path and not _exists(base, path):
            yield f"link ({target}): no such file in the checkout"


def check(
    text: str,
    parser: argparse.ArgumentParser,
    root: Path = REPO,
    pending: frozenset[str] | set[str] = frozenset(),
    base: Path | None = None,
) -> list[str]:
    """Every problem of ``text`` (Markdown) against ``parser`` and the checkout at ``root``;
    links resolve from ``base``, the document's folder (default ``root``, as for the README)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    targets = make_targets((root / "Makefile").read_text())
    pending = frozenset(pending)
    problems: list[str] = []
    for code in code_texts(text):
        problems += pets_problems(code, parser, pending)
        problems += dvc_problems(code, stages)
        problems += key_problems(code, params)
        problems += make_problems(code, targets)
        problems += path_problems(code, root)
    problems += link_problems(text, base or root)
    return list(dict.fromkeys(problems))


def main(argv: list[str] | None = None) -> int:
    from petsml.cli import build_parser

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("file", nargs="?", default=str(REPO / "README.md"))
    file = Path(args.parse_args(argv).file)
    problems = check(file.read_text(), build_parser(), base=file.resolve().parent)
    for problem in problems:
        print(f"{file.name}: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
