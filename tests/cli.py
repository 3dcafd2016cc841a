"""``pets`` run in this process, as a user would type it: the exit code and what it printed."""

from __future__ import annotations


def run_pets(argv: list[str], capsys) -> tuple[int, str, str]:
    """``pets <argv>`` through :func:`petsml.cli.main`; returns (exit code, stdout, stderr)."""
    from petsml.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
