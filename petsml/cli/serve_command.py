"""``pets serve``: the champion (or ``--alias``) as a REST API, behind ``mlflow models serve``.

The served model is the registered pyfunc, so the API is MLflow's own (``POST /invocations``,
``GET /ping``); the project's input limits (params.yaml ``serve.max_bytes`` and
``serve.max_pixels``) reach it as its ``model_config`` through MLflow's
``SERVING_MODEL_CONFIG``, so a model logged under other limits answers under this project's.
Supervised as ``pets ui`` is: every signal that ends ``pets`` ends the server's whole tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from petsml.cli.common import aliased_version, parser_for
from petsml.cli.output import add_json_flag, emit_object
from petsml.cli.server_commands import SERVER_EXITS, add_server_options, warn_if_exposed

SERVING_MODEL_CONFIG = "SERVING_MODEL_CONFIG"  # read by mlflow's scoring server at load time


def input_limits(params_file: str | Path) -> dict[str, int] | None:
    """``serve.max_bytes`` / ``serve.max_pixels`` of the project (None: no params file, the
    model's own logged limits apply)."""
    path = Path(params_file)
    if not path.is_file():
        return None
    from petsml.config import load_params

    serve = load_params(path).serve
    return {"max_bytes": serve.max_bytes, "max_pixels": serve.max_pixels}


def curl_example(url: str) -> str:
    """A request a user can paste: one photo, base64-encoded, MLflow's dataframe_split form."""
    return (
        f"curl -s {url}invocations -H 'Content-Type: application/json' -d "
        '"{\\"dataframe_split\\": {\\"columns\\": [\\"image\\"], \\"data\\": '
        '[[\\"$(base64 -w0 photo.jpg)\\"]]}}"'
    )


def serve_command(model_uri: str, host: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
            "--env-manager", "local", "-h", host, "-p", str(port), "-w", str(workers)]  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> None:
    from petsml.web.supervise import check_port_free, run_server

    reg, holder = aliased_version(args)
    check_port_free(args.host, args.port)  # before a URL leading to whatever holds the port
    warn_if_exposed(args.host, "the model server")
    limits = input_limits(args.params)
    env_config = json.dumps(limits) if limits else None
    model_uri = f"models:/{reg.name}@{args.alias}"
    url = f"http://{args.host}:{args.port}/"
    info = {"url": url, "model": model_uri, "version": str(holder.version),
            "limits": limits, "curl": curl_example(url)}  # fmt: skip

    def text(obj) -> str:
        limit = ("the model's own" if obj["limits"] is None else
                 ", ".join(f"{k} {v:,}" for k, v in obj["limits"].items()))  # fmt: skip
        return (f"{obj['model']} (version {obj['version']}) on {obj['url']} "
                f"(input limits: {limit}); ready when {obj['url']}ping answers. Try:\n"
                f"  {obj['curl']}")  # fmt: skip

    emit_object(info, args.json, text)
    os.environ["MLFLOW_TRACKING_URI"] = reg.tracking_uri  # the registry models:/ resolves in
    if env_config:
        os.environ[SERVING_MODEL_CONFIG] = env_config
    sys.exit(run_server(serve_command(model_uri, args.host, args.port, args.workers)))


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "serve", parents=[common], help="the champion as a REST API (mlflow models serve)",
        description="Serve the registered champion (or --alias) with `mlflow models serve`: "
        "POST /invocations answers breed, species, probability and top 5 per photo (base64 in "
        "an 'image' column), GET /ping says it is up. The project's serve.max_bytes and "
        "serve.max_pixels are the served model's input limits.",
        epilog="example:\n  pets serve --port 5001\n  curl -s http://127.0.0.1:5001/invocations "
        "-H 'Content-Type: application/json' \\\n    -d \"{\\\"dataframe_split\\\": "
        "{\\\"columns\\\": [\\\"image\\\"], \\\"data\\\": [[\\\"$(base64 -w0 photo.jpg)\\\"]]}}\""
        "\n\n" + SERVER_EXITS,
    )  # fmt: skip
    add_server_options(p, 5001)
    p.add_argument("--alias", default="champion", help="registry alias")
    p.add_argument("--workers", type=int, default=1, help="server processes (uvicorn workers)")
    add_json_flag(p, "one object when serving starts: url, model, version, limits, curl")
    p.set_defaults(func=cmd_serve)
