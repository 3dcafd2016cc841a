"""``pets promote``, ``pets rollback``, ``pets history``: moving and reading the aliases."""

from __future__ import annotations

import argparse

from petsml.cli.common import parser_for, registry
from petsml.cli.output import add_json_flag, emit_object, emit_rows, exit_codes


def _moved(reg, event) -> dict:
    return {"model": reg.name, "alias": event.alias, "version": event.version,
            "previous": event.previous, "action": event.action, "reason": event.reason}  # fmt: skip


def _moved_text(row) -> str:
    previous = f"v{row['previous']}" if row["previous"] else "none"
    return f"{row['model']}@{row['alias']} -> v{row['version']} (was {previous}): {row['reason']}"


def cmd_promote(args: argparse.Namespace) -> None:
    """A version number (``3``, ``v3``) or an alias (``challenger``) becomes the champion."""
    from petsml.tracking.edge_export import resolve

    reg = registry(args)
    version, _ = resolve(reg, args.version)
    event = reg.promote(version.version, args.reason)
    emit_object(_moved(reg, event), args.json, _moved_text)


def cmd_rollback(args: argparse.Namespace) -> None:
    reg = registry(args)
    event = reg.rollback(args.reason)
    emit_object(_moved(reg, event), args.json, _moved_text)


def cmd_history(args: argparse.Namespace) -> None:
    reg = registry(args)
    events = reg.history()
    if args.json:
        emit_rows((e.as_dict() for e in events), True)
        return
    for version in reg.unfinished():  # a register stage killed half-way
        print(f"NOTE: {reg.unfinished_note(version)}")
    if not events:
        print(f"{reg.name}: no alias moves recorded in {reg.tracking_uri}")
        return
    aliases = reg.aliases()
    print(f"{reg.name}: " + ", ".join(f"@{a} = v{v}" for a, v in sorted(aliases.items())))
    for e in events:
        was = f"v{e.previous}" if e.previous else "-"
        print(f"{e.time}  @{e.alias:<10} v{e.version:<4} was {was:<5} {e.action:<8} {e.reason}")


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "promote", parents=[common], help="make a version (or an alias's) the champion",
        description="Point @champion at a version by hand, without the gate; the move and its "
        "reason are recorded on the version (`pets history`), and `pets rollback` undoes it.",
        epilog="examples:\n  pets promote 3 --reason \"hand-checked on new photos\"\n"
        "  pets promote challenger --reason \"better on this week's photos\"\n\n"
        + exit_codes("no such version or alias, or it already is the champion"),
    )  # fmt: skip
    p.add_argument("version", metavar="VERSION_OR_ALIAS",
                   help="a version number (3, v3) or an alias (challenger)")  # fmt: skip
    p.add_argument("--reason", required=True, help="why (recorded on the version)")
    add_json_flag(p, "one object: model, alias, version, previous, action, reason")
    p.set_defaults(func=cmd_promote)

    p = parser_for(
        sub, "rollback", parents=[common], help="champion back to the one it replaced",
        description="Give @champion back to the version the current champion replaced.",
        epilog=exit_codes("no champion, or it replaced none"),
    )  # fmt: skip
    p.add_argument("--reason", help="why (recorded); default 'rollback from version N'")
    add_json_flag(p, "one object: model, alias, version, previous, action, reason")
    p.set_defaults(func=cmd_rollback)

    p = parser_for(
        sub, "history", parents=[common], help="every alias move, oldest first",
        description="Every move of every alias of the registered model (register, gate, "
        "promote, rollback), oldest first, with who, when and why.",
        epilog=exit_codes("no registry to read"),
    )  # fmt: skip
    add_json_flag(p, "JSON Lines, one alias move a line")
    p.set_defaults(func=cmd_history)
