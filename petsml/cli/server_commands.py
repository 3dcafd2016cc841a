"""``pets ui`` and ``pets web``: the MLflow UI and the project's web page, on loopback."""

from __future__ import annotations

import argparse
import sys

from petsml.cli.common import model_name
from petsml.errors import PetsError


def cmd_ui(args: argparse.Namespace) -> None:
    """Serve the MLflow UI on loopback and print the link to the last run's strategies.

    MLflow 3.17 opens an experiment on its GenAI overview whatever the experiment's kind tag
    says; the track stage's shared view (``ui_path`` in reports/mlflow_runs.json) opens on the
    strategies compared side by side, so that link is the first thing to show a user.
    """
    from petsml import paths
    from petsml.io import read_json
    from petsml.tracking import store
    from petsml.web.supervise import check_port_free, run_server

    uri = args.tracking_uri or store.tracking_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.exists():
        raise PetsError(f"{db}: no MLflow store yet. Run `dvc repro` (or `make run`) first.")
    check_port_free("127.0.0.1", args.port)  # before a link to whatever holds the port
    base = f"http://127.0.0.1:{args.port}"
    record = read_json(paths.MLFLOW_RUNS) if paths.MLFLOW_RUNS.is_file() else {}
    link = base + record["ui_path"] if record.get("ui_path") else base
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port",
               str(args.port), "--backend-store-uri", uri]  # fmt: skip
    if db is not None:
        command += ["--default-artifact-root", store.artifact_root(uri)]
    print(f"MLflow UI: {link}", flush=True)
    if not record.get("ui_path"):
        print(f"(no {paths.MLFLOW_RUNS} yet: run `dvc repro` for the strategies view)", flush=True)
    # `mlflow ui` starts uvicorn and job workers (some in sessions of their own): every signal
    # that ends this command ends all of them (petsml/web/supervise.py)
    sys.exit(run_server(command))


def cmd_web(args: argparse.Namespace) -> None:
    """Serve the web page (predict + similar photos + registry view) on loopback."""
    from petsml.web.server import serve

    serve(model_name(args), args.tracking_uri, alias=args.alias, host="127.0.0.1",
          port=args.port, params_path=args.params)  # fmt: skip


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[common], help="MLflow UI, opened on the strategies view")
    p.add_argument("--port", type=int, default=5000, help="loopback port (default %(default)s)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("web", parents=[common], help="web page: predict and similar photos")
    p.add_argument("--port", type=int, default=8000, help="loopback port (default %(default)s)")
    p.add_argument("--alias", default="champion", help="registry alias (default %(default)s)")
    p.set_defaults(func=cmd_web)
