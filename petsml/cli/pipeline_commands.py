"""``pets run`` and ``pets sweep``: the pipeline itself, from the same command as the rest.

``pets run`` is ``dvc repro`` in the project's folder: the pipeline a user expects, each stage
re-run only when its code, params or data changed; under a stage server
(:mod:`petsml.stage_server`), so each stage starts as a fork that already holds its libraries.
``pets sweep`` hands its arguments to ``python -m pipelines.sweep`` (the Prefect flow's own
command line, declared once from the flow's signature by pipelines/flow_cli.py), so
``pets sweep --help`` is that flow's help.
Both run as child processes in the project's folder: the orchestration code is not part of the
installed library, and Ctrl-C reaches the child as it would in a shell.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from petsml.cli.common import parser_for, project_options, project_root
from petsml.cli.output import INTERRUPTED, add_json_flag, emit_object, exit_codes
from petsml.errors import PetsError

SWEEP_MODULE = "pipelines.sweep"  # the flow's command line; not imported by pets itself
RUN_EXITS = exit_codes("a stage failed (its error is above)", c130="interrupted (Ctrl-C)")


def repro_command(targets: list[str], force: bool, dry: bool) -> list[str]:
    return [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []),
            *(["--dry"] if dry else []), *targets]  # fmt: skip


def _child(command: list[str], root: Path, as_json: bool) -> int:
    """Run ``command`` in ``root``; its output to stderr under --json (stdout is the answer)."""
    try:
        with subprocess.Popen(command, cwd=root, stdout=sys.stderr if as_json else None) as child:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got the Ctrl-C too: let it stop cleanly
                child.wait()
                return INTERRUPTED
    except FileNotFoundError as error:
        raise PetsError(f"cannot start {command[0]}: {error}") from None


def _project(args: argparse.Namespace) -> Path:
    root = project_root(args)
    if not (root / "dvc.yaml").is_file():
        raise PetsError(f"{root}: no dvc.yaml, not a pets-pipeline project. Run from the "
                        "project folder or pass --params <project>/params.yaml.")  # fmt: skip
    return root


def cmd_run(args: argparse.Namespace) -> None:
    from petsml.stage_server import serving

    root = _project(args)
    command = repro_command(args.targets, args.force, args.dry)
    with serving():  # each stage a warm fork: the libraries imported once per run
        code = _child(command, root, args.json)
    if args.json:
        emit_object({"project": str(root), "command": command[2:], "exit_code": code}, True)
    if code:
        print(f"ERROR: dvc repro ended with exit status {code}", file=sys.stderr)
    sys.exit(code)


def split_sweep_args(argv: list[str]) -> tuple[str, bool, list[str]]:
    """(``--params``, ``--json``, the rest for pipelines.sweep) of ``pets sweep``'s arguments."""
    params, as_json, rest = "params.yaml", False, []
    items = iter(argv)
    for item in items:
        if item == "--json":
            as_json = True
        elif item == "--params":
            params = next(items, None) or _missing("--params")
        elif item.startswith("--params="):
            params = item.split("=", 1)[1]
        else:
            rest.append(item)
    return params, as_json, rest


def _missing(flag: str) -> str:
    raise PetsError(f"{flag} needs a value (the project's params file)")


def sweep_command(root: Path, rest: list[str]) -> list[str]:
    asks_help = any(a in ("-h", "--help") for a in rest)
    project = [] if asks_help or "--project-dir" in rest else ["--project-dir", str(root)]
    return [sys.executable, "-m", SWEEP_MODULE, *project, *rest]


def cmd_sweep(args: argparse.Namespace) -> None:
    params, as_json, rest = split_sweep_args(args.sweep_args)
    args.params = params
    root = _project(args)
    command = sweep_command(root, rest)
    if not as_json:
        sys.exit(_child(command, root, False))
    # the flow prints its table, then the members' results as one JSON list on the last line
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as child:
        last = ""
        for line in child.stdout:
            sys.stderr.write(line)
            last = line.strip() or last
        code = child.wait()
    try:
        members = json.loads(last) if code == 0 else None
    except json.JSONDecodeError:
        members = None
    emit_object({"project": str(root), "exit_code": code, "members": members}, True)
    sys.exit(code)


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "run", parents=[project_options()],
        help="run the pipeline: `dvc repro` of the project (what changed re-runs)",
        description="The pipeline, as `dvc repro` in the project's folder: every stage of "
        "dvc.yaml (`dvc dag` draws them), each re-run only when its code, params or data "
        "changed, the rest skipped. This is the run a user "
        "expects; Prefect flows (scheduled retrains, `pets sweep`) run the same stages.",
        epilog="examples:\n  pets run              # everything that is out of date\n"
        "  pets run train        # up to one stage\n\n" + RUN_EXITS,
    )  # fmt: skip
    p.add_argument("targets", nargs="*", metavar="STAGE", help="stages to bring up to date "
                   "(default: all)")  # fmt: skip
    p.add_argument("-f", "--force", action="store_true", help="re-run even up-to-date stages")
    p.add_argument("--dry", action="store_true", help="print the commands, run nothing")
    add_json_flag(p, "dvc's output goes to stderr; one object: project, command, exit_code")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "sweep",
        help="backbones x strategies as parallel runs (Prefect flow; `pets sweep --help`)",
        description="python -m pipelines.sweep in the project's folder; every argument but "
        "--params and --json is the flow's own (see `pets sweep --help`).",
        add_help=False,  # --help is the flow's: its options are declared there, once
        prefix_chars="\0",  # every argument, --help included, goes to the flow's command line
    )
    p.add_argument("sweep_args", nargs="*", metavar="ARG")
    p.delegated_to = SWEEP_MODULE  # whose build_parser() declares the options (tools/readme_check)
    p.set_defaults(func=cmd_sweep)
