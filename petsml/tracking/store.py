"""Where MLflow keeps runs: one place that resolves the tracking URI and the experiment.

MLflow 3 no longer accepts a bare ``./mlruns`` file store, so the project default is a SQLite
database under ``mlruns/`` with artifacts in ``mlruns/artifacts``. ``MLFLOW_TRACKING_URI``
overrides it (a shared server, another database); for a SQLite override the artifacts go next to
the database file, for a server the server decides. Whether the store still holds what the
reports name is :mod:`petsml.tracking.store_check`'s question.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.errors import PetsError

log = logging.getLogger(__name__)

ENV_VAR = "MLFLOW_TRACKING_URI"
DB_NAME = "mlflow.db"
ARTIFACTS = "artifacts"
_SQLITE = "sqlite:///"


class StoreError(PetsError):
    """The MLflow store cannot be used (a lock held too long); the message says what to do."""


def default_tracking_uri(root: str | Path = ".") -> str:
    """``sqlite:///mlruns/mlflow.db`` relative to ``root`` (absolute if ``root`` is)."""
    db = Path(root) / paths.MLRUNS / DB_NAME
    return _SQLITE + db.as_posix().removeprefix("./")


# ``mlflow.set_tracking_uri`` also writes $MLFLOW_TRACKING_URI (so subprocesses inherit it);
# remember what :func:`configure` put there, so it is not mistaken for a user override later.
_set_by_configure: str | None = None


def tracking_uri(root: str | Path = ".") -> str:
    """The tracking URI to use: ``$MLFLOW_TRACKING_URI`` if set, else the project default."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env != _set_by_configure:
        return env
    return default_tracking_uri(root)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the cwd unless absolute)."""
    if not uri.startswith(_SQLITE):
        return None
    rest = uri[len(_SQLITE) :].split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``artifacts/`` beside a SQLite database.

    Addressed like the database: relative (to the cwd, the project root) for a relative
    ``sqlite:///mlruns/mlflow.db``, so the project folder can be moved or copied with its
    ``mlruns/``; an absolute ``file://`` URI for an absolute database; ``None`` for a tracking
    server, which chooses its own artifact store.
    """
    db = sqlite_path(uri)
    if db is None:
        return None
    if not db.is_absolute():
        return (db.parent / ARTIFACTS).as_posix()
    return (db.parent / ARTIFACTS).resolve().as_uri()


def configure(root: str | Path = ".") -> str:
    """Resolve the tracking URI, create the local folders it needs and make MLflow use it."""
    import mlflow

    global _set_by_configure
    uri = tracking_uri(root)
    overridden = uri == os.environ.get(ENV_VAR, "").strip()
    db = sqlite_path(uri)
    if db is not None:
        (db.parent / ARTIFACTS).mkdir(parents=True, exist_ok=True)
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    _set_by_configure = None if overridden else uri
    return uri


def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """Id of the active experiment called ``name``, created with :func:`artifact_root`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    ensure_store(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            log.info("restoring deleted MLflow experiment %r", name)
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = artifact_root(uri)
    try:
        experiment_id = client.create_experiment(name, artifact_location=location)
    except MlflowException as error:  # another process created it since we looked
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id
    db = sqlite_path(uri)
    if location is not None and db is not None and not db.is_absolute():
        # MLflow stores every local location absolute; keep this one relative so the runs'
        # and models' artifact URIs (derived from it) survive moving the project folder
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(db)) as connection, connection:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (location, int(experiment_id)),
            )
    log.info("created MLflow experiment %r (id %s) in %s", name, experiment_id, uri)
    return experiment_id


# --------------------------------------------------------------------------- concurrency
#
# MLflow's SQLAlchemy store already waits up to 20 s on a locked SQLite file in every session
# (``PRAGMA busy_timeout = 20000``), but two processes that open a *new* database both run the
# schema migrations and one of them fails ("duplicate column", "database is locked", alembic
# "expected to match one row"). A file lock next to the database serialises that first
# contact, and the registry's champion gate (compare, then move the alias) runs under another.

LOCK_TIMEOUT_S = 600.0
_locks: dict[str, Any] = {}
_ready: set[str] = set()


def lock_path(uri: str, purpose: str) -> Path | None:
    """``<db>.<purpose>.lock`` beside a SQLite database; None for a tracking server."""
    db = sqlite_path(uri)
    return None if db is None else db.with_name(f"{db.name}.{purpose}.lock")


@contextmanager
def store_lock(uri: str, purpose: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an inter-process lock on the SQLite store at ``uri`` (no-op for a server).

    One lock object per file and process, so a block that already holds it can enter again.
    """
    path = lock_path(uri, purpose)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    lock = _locks.setdefault(key, FileLock(key))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise StoreError(
            f"{path}: another process has held this MLflow store lock for over {timeout_s:.0f} s. "
            "If no pipeline, sweep member or `pets` command is running, delete the file."
        ) from None
    try:
        yield
    finally:
        lock.release()


def ensure_store(uri: str) -> None:
    """Create (or migrate) the SQLite store's tables, one process at a time.

    A no-op for a tracking server and for a store this process has already opened.
    """
    if sqlite_path(uri) is None or uri in _ready:
        return
    from mlflow import MlflowClient

    with store_lock(uri, "schema"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _ready.add(uri)
