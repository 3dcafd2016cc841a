"""``pets ui`` and ``pets web``: the MLflow UI and the project's web page, on loopback unless
``--host`` says otherwise (with a warning: neither page has authentication)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from petsml.cli.common import (
    absolute_sqlite,
    add_tracking_uri,
    model_name,
    parser_for,
    project_options,
    project_root,
)
from petsml.cli.output import add_json_flag, emit_object, exit_codes
from petsml.errors import PetsError

LOOPBACK = "127.0.0.1"
UI_WORKERS = 1  # `pets ui`: MLflow server processes
JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"  # MLflow's GenAI job runner
SERVER_EXITS = exit_codes(
    "the server could not start (no store or model yet, the port in use)",
    c130="ended by Ctrl-C (SIGINT); 128 + N for any other ending signal N (143: SIGTERM)",
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, what: str) -> None:
    """A page bound beyond loopback is readable by anyone who reaches the address: say so."""
    if not is_loopback(host):
        print(
            f"WARNING: {what} listens on {host}, beyond this machine, WITHOUT authentication: "
            "anyone who can reach it can use it. Use --host 127.0.0.1 (the default) unless a "
            "proxy with authentication stands in front.",
            file=sys.stderr,
            flush=True,
        )


def add_server_options(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default=LOOPBACK,
                   help="address to listen on; anything but loopback is exposed without "
                   "authentication (a warning says so)")  # fmt: skip
    p.add_argument("--port", type=int, default=port, help="port to listen on")


def cmd_ui(args: argparse.Namespace) -> None:
    """Serve the MLflow UI and print the link to the last run's strategies.

    MLflow 3.17 opens an experiment on its GenAI overview whatever the experiment's kind tag
    says; the track stage's shared view (``ui_path`` in reports/mlflow_runs.json) opens on the
    strategies compared side by side, so that link is the first thing to show a user.
    """
    from petsml import paths
    from petsml.io import read_json
    from petsml.tracking import store
    from petsml.web.supervise import check_port_free, run_server

    given = absolute_sqlite(args.tracking_uri)
    os.chdir(project_root(args))  # the project's relative store and reports, as the stages do
    uri = given or store.tracking_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.exists():
        raise PetsError(f"{db}: no MLflow store yet. Run `pets run` (dvc repro) first.")
    check_port_free(args.host, args.port)  # before a link to whatever holds the port
    warn_if_exposed(args.host, "the MLflow UI")
    shown = LOOPBACK if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{shown}:{args.port}"
    record = read_json(paths.MLFLOW_RUNS) if paths.MLFLOW_RUNS.is_file() else {}
    link = base + record["ui_path"] if record.get("ui_path") else base
    command = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port),
               "--workers", str(args.workers), "--backend-store-uri", uri]  # fmt: skip
    if db is not None:
        command += ["--default-artifact-root", store.artifact_root(uri)]
    note = None if record.get("ui_path") else f"no {paths.MLFLOW_RUNS} yet: run `pets run` " \
        "for the strategies view"  # fmt: skip
    emit_object(
        {"url": link, "tracking_uri": uri, "note": note},
        args.json,
        lambda o: f"MLflow UI: {o['url']}" + (f"\n({o['note']})" if o["note"] else ""),
    )
    # MLflow's GenAI job runner (seven huey consumer processes) serves nothing this project
    # logs; on unless the user's environment says otherwise
    os.environ.setdefault(JOB_EXECUTION, "false")
    # `mlflow ui` starts uvicorn and job workers (some in sessions of their own): every signal
    # that ends this command ends all of them (petsml/web/supervise.py)
    sys.exit(run_server(command))


def cmd_web(args: argparse.Namespace) -> None:
    """Serve the web page (predict + similar photos + registry view)."""
    from petsml.web.server import serve

    warn_if_exposed(args.host, "the web page")
    serve(model_name(args), args.tracking_uri, alias=args.alias, host=args.host,
          port=args.port, params_path=args.params, as_json=args.json)  # fmt: skip


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "web", parents=[common], help="the web page: predict, similar photos, registry",
        description="Serve the project's web page over the registered model: upload a photo, "
        "see the breed, the top 5 and the most similar training photos; the registry's "
        "versions and the last run's comparison.",
        epilog="example:\n  pets web --port 8000   # then open http://127.0.0.1:8000/\n\n"
        + SERVER_EXITS,
    )  # fmt: skip
    add_server_options(p, 8000)
    p.add_argument("--alias", default="champion", help="registry alias")
    add_json_flag(p, "one object when serving starts: url, model, version")
    p.set_defaults(func=cmd_web)

    p = parser_for(
        sub, "ui", parents=[project_options()], help="the MLflow UI, on the strategies view",
        description="Serve the MLflow UI over the project's store and print the link to the "
        "last run's strategies compared side by side.",
        epilog=SERVER_EXITS,
    )  # fmt: skip
    add_tracking_uri(p)
    add_server_options(p, 5000)
    # MLflow's own default is 4 (a team's tracking server); one viewer's page is served well by
    # one (each worker imports the whole server; docs/TRACKING.md has the start-up figures)
    p.add_argument("--workers", type=int, default=UI_WORKERS,
                   help=f"MLflow server processes (default {UI_WORKERS}: one person's viewer; "
                   "more for a team)")  # fmt: skip
    add_json_flag(p, "one object when serving starts: url, tracking_uri, note")
    p.set_defaults(func=cmd_ui)
