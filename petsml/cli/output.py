"""What ``pets`` prints: one ``--json`` convention for every subcommand, and the exit codes.

``--json`` has one shape per kind of answer, so a script needs no per-command parsing rules:

- a stream of rows (``predict``, ``similar``, ``history``, ...): JSON Lines, one object a line,
  printed as each is known, so ``pets predict *.jpg --json | head -1`` works;
- one answer (``status``, ``report``, ``promote``, ``rollback``, ``export``, a server's
  address, ...): exactly one JSON object on one line.

Errors are the same with and without ``--json``: ``ERROR: ...`` on stderr and a non-zero exit
status, so stdout only ever holds the answer.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

JSON_CONVENTION = (
    "--json (every command): a stream of rows (predict, similar, history, ...) is JSON Lines, "
    "one object a line; any other answer (status, report, promote, export, ...) is exactly one "
    "JSON object. Errors stay 'ERROR: ...' on stderr with a non-zero exit status."
)

OK, FAILURE, MISUSE, INTERRUPTED = 0, 1, 2, 130
EXIT_MEANINGS = {
    OK: "success",
    FAILURE: "failure (a clear ERROR: line on stderr), or some rows failed",
    MISUSE: "misuse: an unknown option, a missing or invalid argument",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_codes(failure: str | None = None, **extra: str) -> str:
    """The ``exit status`` block of a subcommand's epilog; ``failure`` says what 1 means
    for it, ``extra`` adds codes of its own (``c143="ended by SIGTERM"``)."""
    meanings = dict(EXIT_MEANINGS)
    if failure:
        meanings[FAILURE] = failure
    meanings.update({int(code.lstrip("c")): text for code, text in extra.items()})
    lines = [f"  {code:<3} {text}" for code, text in sorted(meanings.items())]
    return "exit status (the same with and without --json):\n" + "\n".join(lines) + "\n"


def add_json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: ``what`` says which shape this command prints (rows or one object)."""
    parser.add_argument("--json", action="store_true", help=f"machine-readable: {what}")


def _default_text(obj: Mapping[str, Any]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in obj.items())


def emit_rows(
    rows: Iterable[Mapping[str, Any]],
    as_json: bool,
    text: Callable[[Mapping[str, Any]], str] | None = None,
) -> None:
    """Print each row: a JSON object a line (``as_json``), else ``text(row)`` (default: the
    values separated by two spaces)."""
    for row in rows:
        if as_json:
            print(json.dumps(dict(row), default=str), flush=True)
        else:
            print(text(row) if text else "  ".join(str(v) for v in row.values()), flush=True)


def emit_object(
    obj: Mapping[str, Any],
    as_json: bool,
    text: Callable[[Mapping[str, Any]], str] | None = None,
) -> None:
    """Print one answer: one JSON object on one line (``as_json``), else ``text(obj)``
    (default: ``key: value`` lines)."""
    if as_json:
        print(json.dumps(dict(obj), default=str), flush=True)
    else:
        print((text or _default_text)(obj), flush=True)
