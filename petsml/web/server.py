"""The web page's server: FastAPI on loopback over the model behind a registry alias.

Routes: ``/`` (the page), ``/static/*`` (its script and style), ``GET /api/model`` (which model
answers), ``POST /api/predict`` (the photo's bytes as the request body: breed, top-5, similar
photos), ``GET /api/photo/<image_id>`` (a thumbnail of an indexed photo, from the folder the
project's data source keeps its photos in: ``data/raw``, or ``data.folder`` for your own),
``GET /api/registry`` (every version, its aliases and scores, and the last run's strategy
comparison).

Uploads are read into memory, never written to disk, and capped at ``serve.max_bytes`` while
they arrive; everything the model cannot use (empty, not an image, too many pixels, a decoder
failure) comes back as a readable message with HTTP 400/413, and the server keeps serving. When
the alias moves (a new champion, a rollback) the next request loads the new version, so the
page always says which model really answered.
"""

import base64
import io
import logging
import sys
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from petsml import paths
from petsml.errors import PetsError
from petsml.web.data_issues_routes import install_data_issues_routes
from petsml.web.feedback_routes import install_feedback_routes
from petsml.web.registry_view import registry_view

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
NEIGHBOURS = 8
THUMB_SIDE = 160


class ModelHolder:
    """The loaded alias model, reloaded when the alias points at another version."""

    def __init__(self, model_name: str, tracking_uri: str | None, alias: str) -> None:
        from petsml.tracking.model_registry import ModelRegistry

        self.registry = ModelRegistry(model_name, tracking_uri)
        self.alias = alias
        self._lock = threading.Lock()
        self._loaded = None
        self.record: dict[str, Any] | None = None  # loader_config: the answers are recorded

    def current(self):
        from petsml.tracking.alias_model import load_alias_model

        holder = self.registry.by_alias(self.alias)
        version = None if holder is None else str(holder.version)
        with self._lock:
            if self._loaded is None or self._loaded.version != version:
                self._loaded = load_alias_model(
                    self.registry, self.alias, {"neighbours": NEIGHBOURS}, record=self.record
                )
                log.info("serving %s (version %s)", self._loaded.uri, self._loaded.version)
            return self._loaded

    def predict(self, data: bytes) -> dict[str, Any]:
        import json

        import pandas as pd

        loaded = self.current()
        frame = pd.DataFrame({"image": [base64.b64encode(data).decode("ascii")]})
        with self._lock:  # one forward pass at a time: two cores, and torch threads its own
            row = loaded.model.predict(frame).iloc[0]
        if row["error"]:
            return {"error": str(row["error"]), "model": loaded.describe()}
        neighbours = json.loads(row["neighbours"]) if row.get("neighbours") else []
        for item in neighbours:  # a folder source's ids are <class>/<file>: slashes stay
            item["thumb"] = f"/api/photo/{quote(item['image_id'])}"
        return {
            "label": row["label"],
            "species": row["species"],
            "probability": float(row["probability"]),
            "top5": json.loads(row["top5"]),
            "neighbours": neighbours,
            "model": loaded.describe(),
            "prediction_id": row.get("prediction_id"),  # for "wrong? it is ..." feedback
        }

    def photo_file(self, image_id: str) -> str | None:
        """The indexed photo's ``file`` (relative to the data source's folder), or None: only
        indexed photos are served."""
        return _indexed_files(self.current()).get(image_id)


def _photo_finder(params_path: str | Path, root: Path) -> tuple[Callable, Path]:
    """(file -> the photo or None, the folder served): the data source of the project's params
    says where its photos live (petsml.data.sources); a name leading out of it gives None."""
    from petsml.config import load_params
    from petsml.data.sources import photo_folder, photo_path

    path = Path(params_path)
    if not path.is_file():  # no project here: the official layout's folder
        folder = (root / paths.RAW).resolve()

        def official(file: str) -> Path | None:
            found = (folder / file).resolve()
            return found if found.is_relative_to(folder) else None

        return official, folder
    data = load_params(path).data
    return (lambda file: photo_path(data, file, root)), photo_folder(data, root)


def _thumbnail(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=85)
        return out.getvalue()


def _limits(params_path: str | Path) -> int:
    """``serve.max_bytes`` from params.yaml (the served model's own limit outside a project)."""
    from petsml.config import load_params
    from petsml.tracking.pyfunc import InputLimits

    path = Path(params_path)
    return load_params(path).serve.max_bytes if path.is_file() else InputLimits().max_bytes


def create_app(
    model_name: str,
    tracking_uri: str | None = None,
    *,
    alias: str = "champion",
    params_path: str | Path = "params.yaml",
    project_root: str | Path = ".",
):
    """The FastAPI app; the model loads on the first request that needs it."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    root = Path(project_root).resolve()
    max_bytes = _limits(params_path)
    find_photo, photo_root = _photo_finder(params_path, root)
    holder = ModelHolder(model_name, tracking_uri, alias)
    app = FastAPI(title="pets", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.holder = holder
    install_feedback_routes(app, holder, params_path)  # records answers; "wrong? it is ..."
    install_data_issues_routes(app, root)  # the Models view's likely label errors
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def problem(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/model")
    def model() -> JSONResponse:
        try:
            return JSONResponse(holder.current().describe())
        except PetsError as error:
            return problem(503, str(error))

    @app.post("/api/predict")
    async def predict(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            return problem(413, _too_big(int(declared), max_bytes))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                return problem(413, _too_big(len(body), max_bytes, at_least=True))
        if not body:
            return problem(400, "the file is empty: pick a photo (JPEG, PNG, ...)")
        try:
            from starlette.concurrency import run_in_threadpool

            answer = await run_in_threadpool(holder.predict, bytes(body))
        except PetsError as error:
            return problem(503, str(error))
        if answer.get("error"):
            return JSONResponse(answer, status_code=400)
        return JSONResponse(answer)

    @app.get("/api/photo/{image_id:path}")
    def photo(image_id: str) -> Response:
        file = holder.photo_file(image_id)
        path = find_photo(file) if file else None
        if path is None or not path.is_file():
            return problem(404, f"no indexed photo {image_id!r} in {photo_root}")
        return Response(_cached_thumbnail(str(path)), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})  # fmt: skip

    @app.get("/api/registry")
    def registry() -> JSONResponse:
        return JSONResponse(registry_view(holder.registry, root))

    return app


def _indexed_files(loaded) -> dict[str, str]:
    """image_id -> file of the loaded version's index (computed once per loaded version)."""
    if not hasattr(loaded, "indexed_files"):
        index = getattr(loaded.model.unwrap_python_model(), "index", None)
        ids, files = ([], []) if index is None else (index.image_id.tolist(), index.file.tolist())
        loaded.indexed_files = dict(zip(ids, files, strict=True))
    return loaded.indexed_files


@lru_cache(maxsize=512)
def _cached_thumbnail(path: str) -> bytes:
    return _thumbnail(Path(path))


def _too_big(size: int, limit: int, at_least: bool = False) -> str:
    mib = limit / (1024 * 1024)
    what = f"more than {limit:,}" if at_least else f"{size:,}"
    return (f"the file is {what} bytes, over the limit of {limit:,} bytes ({mib:.0f} MiB, "
            "params.yaml serve.max_bytes): pick a smaller photo")  # fmt: skip


def serve(
    model_name: str,
    tracking_uri: str | None,
    *,
    alias: str = "champion",
    host: str = "127.0.0.1",
    port: int = 8000,
    params_path: str | Path = "params.yaml",
    as_json: bool = False,
) -> None:
    """Load the model, print the link and serve until a signal ends it (Ctrl-C, SIGTERM,
    SIGHUP, SIGQUIT): uvicorn shuts down gracefully, then any process this one started goes
    too and the exit status is 128 + the signal, as for a process the signal killed."""
    import uvicorn

    from petsml.web.supervise import check_port_free, exit_code, on_ending_signals, stop_children

    check_port_free(host, port)  # before minutes of loading, and before printing a link
    app = create_app(model_name, tracking_uri, alias=alias, params_path=params_path,
                     project_root=Path(params_path).resolve().parent)  # fmt: skip
    loaded = app.state.holder.current()  # fail now, with the fix, not on the first upload
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    ended: list[int] = []

    def request_exit(signum: int) -> None:  # uvicorn itself handles only SIGINT and SIGTERM
        ended.append(signum)
        server.should_exit = True

    on_ending_signals(request_exit)
    url = f"http://{host}:{port}/"
    if as_json:  # the pets CLI's one-object answer (petsml/cli/output.py)
        import json

        print(json.dumps({"url": url, "model": loaded.uri, "version": loaded.version}), flush=True)
    else:
        print(f"{loaded.uri} (version {loaded.version}) on {url}", flush=True)
    try:
        server.run()
    finally:
        stop_children()
    if ended:
        sys.exit(exit_code(ended[0]))
    if not server.started:
        raise SystemExit(1)
