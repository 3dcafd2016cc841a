"""``pets promote``, ``pets rollback``, ``pets history``: moving and reading the aliases."""

from __future__ import annotations

import argparse
import json

from petsml.cli.common import registry


def cmd_promote(args: argparse.Namespace) -> None:
    reg = registry(args)
    event = reg.promote(args.version, args.reason)
    previous = f"v{event.previous}" if event.previous else "none"
    print(f"{reg.name}@champion -> v{event.version} (was {previous}): {event.reason}")


def cmd_rollback(args: argparse.Namespace) -> None:
    reg = registry(args)
    event = reg.rollback(args.reason)
    print(f"{reg.name}@champion -> v{event.version} (was v{event.previous}): {event.reason}")


def cmd_history(args: argparse.Namespace) -> None:
    reg = registry(args)
    events = reg.history()
    if args.json:
        print(json.dumps([e.as_dict() for e in events], indent=2))
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
    p = sub.add_parser("promote", parents=[common], help="make a version the champion (no gate)")
    p.add_argument("version", help="model version number, e.g. 3")
    p.add_argument("--reason", required=True, help="why (recorded on the version)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", parents=[common], help="champion back to the previous one")
    p.add_argument("--reason", help="why (recorded); default 'rollback from version N'")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", parents=[common], help="list every alias move")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_history)
