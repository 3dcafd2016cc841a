"""Does the MLflow store still hold what the reports name? The ``mlflow_store`` stage's check.

DVC cannot see the MLflow store: delete mlruns/mlflow.db and `dvc repro` would keep
reports/mlflow_runs.json and reports/registry.json, which then name runs and versions that do
not exist. The always-changed `mlflow_store` stage writes FINGERPRINT, a dependency of `track`
and `register`: the tracking URI, the experiment and a store id kept as a tag on the
experiment. The id changes only when the store stops holding what those reports claim (a new
database, a new server, deleted runs or versions), so a healthy store re-runs nothing, a lost
one re-runs both stages once, and DVC's run cache never finds an entry for a new store.
A SQLite store is read with the sqlite3 module, without importing MLflow.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.io import read_json, write_json
from petsml.tracking.store import (
    ensure_store,
    get_or_create_experiment,
    sqlite_path,
    tracking_uri,
)

log = logging.getLogger(__name__)

FINGERPRINT = paths.MLFLOW_STORE
STORE_ID_TAG = "petsml.store_id"


def _same_store(recorded: str, uri: str) -> bool:
    """Whether two tracking URIs name one store (SQLite paths compared resolved)."""
    a, b = sqlite_path(recorded), sqlite_path(uri)
    if a is not None and b is not None:
        return a.resolve() == b.resolve()
    return recorded.rstrip("/") == uri.rstrip("/")


def read_claims(root: str | Path = ".") -> dict[str, Any]:
    """What ``mlflow_runs.json`` and ``registry.json`` say the store holds.

    ``{"uris": [...], "runs": [...], "models": [...], "versions": [(name, version, run_id)],
    "unreadable": [file, ...]}``; an absent report claims nothing, an unreadable one counts as
    lost (its stage must write it again).
    """
    root = Path(root)
    claims: dict[str, Any] = {"uris": [], "runs": [], "models": [], "versions": [],
                              "unreadable": []}  # fmt: skip
    runs = _read_report(root / paths.MLFLOW_RUNS, claims)
    if runs is not None:
        if runs.get("tracking_uri"):
            claims["uris"].append(str(runs["tracking_uri"]))
        parent = runs.get("parent_run_id")
        claims["runs"] += [str(r) for r in [parent, *(runs.get("children") or {}).values()] if r]
        claims["models"] += [str(m) for m in (runs.get("model_ids") or {}).values() if m]
    registered = _read_report(root / paths.REGISTRY_REPORT, claims)
    if registered is not None and registered.get("model_name") and registered.get("version"):
        claims["versions"].append(
            (str(registered["model_name"]), str(registered["version"]),
             str(registered.get("run_id") or ""))
        )  # fmt: skip
    return claims


def _read_report(path: Path, claims: dict[str, Any]) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        claims["unreadable"].append(path.as_posix())
        return None
    return data


class _SqliteReader:
    """Reads a SQLite store read-only with the sqlite3 module: no MLflow import, no writes."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)

    def close(self) -> None:
        self.conn.close()

    def store_id(self, experiment: str) -> str | None:
        row = self.conn.execute(
            "SELECT t.value FROM experiments e JOIN experiment_tags t "
            "ON t.experiment_id = e.experiment_id "
            "WHERE e.name = ? AND e.lifecycle_stage = 'active' AND t.key = ?",
            (experiment, STORE_ID_TAG),
        ).fetchone()
        return row[0] if row else None

    def _present(self, sql: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        return {row[0] for row in self.conn.execute(sql.format(marks), ids)}

    def present_runs(self, ids: list[str]) -> set[str]:
        return self._present(
            "SELECT run_uuid FROM runs WHERE run_uuid IN ({}) AND lifecycle_stage = 'active'", ids
        )

    def present_models(self, ids: list[str]) -> set[str]:
        return self._present(
            "SELECT model_id FROM logged_models WHERE model_id IN ({}) "
            "AND lifecycle_stage = 'active'",
            ids,
        )

    def version_run(self, name: str, version: str) -> str | None:
        row = self.conn.execute(
            "SELECT run_id FROM model_versions WHERE name = ? AND version = ? "
            "AND current_stage != 'Deleted_Internal'",
            (name, int(version)),
        ).fetchone()
        return None if row is None else (row[0] or "")


class _ClientReader:
    """The same questions through MlflowClient (a tracking server, or an unexpected schema)."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def close(self) -> None:
        pass

    def store_id(self, experiment: str) -> str | None:
        found = self.client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            return None
        return found.tags.get(STORE_ID_TAG)

    def _exists(self, getter, item) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return getter(item)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def present_runs(self, ids: list[str]) -> set[str]:
        runs = {i: self._exists(self.client.get_run, i) for i in ids}
        return {i for i, r in runs.items() if r is not None and r.info.lifecycle_stage == "active"}

    def present_models(self, ids: list[str]) -> set[str]:
        return {i for i in ids if self._exists(self.client.get_logged_model, i) is not None}

    def version_run(self, name: str, version: str) -> str | None:
        found = self._exists(lambda v: self.client.get_model_version(name, v), version)
        return None if found is None else (found.run_id or "")


def inspect_store(uri: str, experiment: str, claims: dict[str, Any]) -> tuple[str | None, list]:
    """(store id or None, what the claims name that the store at ``uri`` lacks)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None, _everything(claims)
    try:
        reader: Any = _SqliteReader(db) if db is not None else _ClientReader(uri)
        try:
            return _inspect(reader, experiment, claims, uri)
        finally:
            reader.close()
    except sqlite3.Error as error:  # not the schema this reader knows: ask MLflow
        log.debug("reading %s directly failed (%s); asking MLflow", db, error)
        # A store another process is still creating has no tables yet: MLflow would migrate it
        # at the same time and fail (alembic "expected to match one row"); wait for the schema
        # lock that creation holds.
        ensure_store(uri)
        reader = _ClientReader(uri)
        return _inspect(reader, experiment, claims, uri)


def _everything(claims: dict[str, Any]) -> list[str]:
    return (
        [f"unreadable {f}" for f in claims["unreadable"]]
        + [f"run {r}" for r in claims["runs"]]
        + [f"logged model {m}" for m in claims["models"]]
        + [f"{name} version {v}" for name, v, _ in claims["versions"]]
    )


def _inspect(reader, experiment: str, claims: dict[str, Any], uri: str) -> tuple[str | None, list]:
    missing = [f"unreadable {f}" for f in claims["unreadable"]]
    missing += [f"runs recorded in {u}" for u in claims["uris"] if not _same_store(u, uri)]
    runs = reader.present_runs(claims["runs"])
    missing += [f"run {r}" for r in claims["runs"] if r not in runs]
    models = reader.present_models(claims["models"])
    missing += [f"logged model {m}" for m in claims["models"] if m not in models]
    for name, version, run_id in claims["versions"]:
        holder = reader.version_run(name, version)
        if holder is None or (run_id and holder and holder != run_id):
            missing.append(f"{name} version {version} (from run {run_id})")
    return reader.store_id(experiment), missing


def new_store_id(uri: str, experiment: str) -> str:
    """Tag the experiment (created if need be) with a fresh store id; returns it."""
    from mlflow import MlflowClient

    ensure_store(uri)
    experiment_id = get_or_create_experiment(experiment, uri)
    store_id = uuid.uuid4().hex
    MlflowClient(tracking_uri=uri).set_experiment_tag(experiment_id, STORE_ID_TAG, store_id)
    return store_id


def refresh_fingerprint(
    experiment: str, root: str | Path = ".", out: str | Path | None = FINGERPRINT
) -> dict[str, str]:
    """Check the store against the reports; write and return the fingerprint (see above)."""
    root = Path(root)
    uri = tracking_uri(root)
    store_id, missing = inspect_store(uri, experiment, read_claims(root))
    if missing:
        shown = ", ".join(missing[:6]) + (
            f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        )
        log.warning(
            "the MLflow store at %s lacks what the reports name (%s): track and register "
            "will run again",
            uri,
            shown,
        )
    if store_id is None or missing:
        store_id = new_store_id(uri, experiment)
        log.info("MLflow store %s: new store id %s", uri, store_id)
    record = {"tracking_uri": uri, "experiment": experiment, "store_id": store_id}
    if out is not None:
        write_json(root / out, record)
    return record
