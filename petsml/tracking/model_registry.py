"""The MLflow model registry of one model: versions, aliases and their recorded moves.

MLflow 3 deprecates registry *stages*; this module uses aliases only. ``challenger`` points at
the newest registered candidate; ``champion`` at the version that serves
(``models:/<name>@champion``). Every alias move is recorded as a tag on the version that
receives the alias (``alias_event.<utc time>.<alias>`` = JSON with time, reason, previous
holder), and a version that becomes champion remembers the one it replaced
(``previous_champion``), so :meth:`ModelRegistry.rollback` can undo a promotion and
:meth:`ModelRegistry.history` can list every move. Who *deserves* the champion alias is
decided elsewhere (:mod:`petsml.tracking.promotion`).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from petsml.tracking.errors import RegistryError
from petsml.tracking.gate import PREDICTIONS_ARTIFACT

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "alias_event."
PREVIOUS_CHAMPION_TAG = "previous_champion"
RUN_ID_TAG = "run_id"
# The register stage's progress on a version: "started" when it is created, "complete" once its
# aliases, gate verdict and card are set. A process killed in between (SIGKILL, power loss)
# leaves "started": the version then has no gate decision and perhaps no alias, and the next
# `dvc repro register` finishes it (the version is found by its run, not registered again).
REGISTRATION_TAG = "registration"
STARTED, COMPLETE = "started", "complete"


@dataclass(frozen=True)
class AliasEvent:
    time: str  # ISO 8601 UTC
    alias: str
    version: str  # the version that received the alias
    previous: str | None  # the version that held it before (None: nobody)
    action: str  # register | gate | promote | rollback
    reason: str
    user: str

    def tag_key(self) -> str:
        stamp = self.time.replace("-", "").replace(":", "").replace("+0000", "Z")
        return f"{EVENT_PREFIX}{stamp}.{self.alias}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def float_or_none(value: Any) -> float | None:
    """A version tag (always a string) read back as a number; None where it holds none."""
    try:
        return None if value in (None, "", "None") else float(value)
    except (TypeError, ValueError):
        return None


def _version_str(version: Any) -> str:
    text = str(version).strip()
    if text.lower().startswith("v") and text[1:].isdigit():
        text = text[1:]
    if not text.isdigit():
        raise RegistryError(f"{version!r} is not a model version number (e.g. 3).")
    return text


@contextmanager
def global_uri(uri: str) -> Iterator[None]:
    """Point mlflow's fluent API at ``uri`` for a block (mlflow.register_model uses it).

    ``mlflow.set_*_uri`` also export ``MLFLOW_*_URI`` for subprocesses, and
    ``get_registry_uri`` answers the resolved value even when none was set: restoring through
    them would leave the variables behind and pin later code (and child processes) to this
    store. So the module globals and the environment are put back exactly as they were."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {name: os.environ.get(name) for name in names}
    globals_before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = globals_before
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ModelRegistry:
    """One registered model (``<prefix>-<task>``) in the MLflow registry at ``tracking_uri``."""

    def __init__(self, name: str, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        from petsml.tracking.store import ensure_store, sqlite_path
        from petsml.tracking.store import tracking_uri as default_uri

        tracking_uri = tracking_uri or default_uri()
        db = sqlite_path(tracking_uri)
        if db is not None and not db.is_file():  # do not create an empty store by reading it
            raise RegistryError(
                f"no MLflow database at {db} ({tracking_uri}): run the pipeline (`dvc repro`) "
                "from the project root, or point MLFLOW_TRACKING_URI at the registry."
            )
        ensure_store(tracking_uri)  # a store another process is still creating: wait for it
        self.name = name
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ---- reading
    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def versions(self) -> list:
        """Every version of the model, oldest first (empty if the model is not registered)."""
        found, token = [], None
        while True:
            page = self.client.search_model_versions(
                f"name = '{self.name}'", max_results=1000, page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        return sorted(found, key=lambda v: int(v.version))

    def version(self, version: Any):
        from mlflow.exceptions import MlflowException

        number = _version_str(version)
        try:
            return self.client.get_model_version(self.name, number)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                known = [v.version for v in self.versions()]
                raise RegistryError(
                    f"{self.name} has no version {number} (versions: {known or 'none'}) in "
                    f"the registry at {self.tracking_uri}."
                ) from None
            raise

    def aliases(self) -> dict[str, str]:
        """alias -> version of this registered model ({} if not registered)."""
        if not self.exists():
            return {}
        return {k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()}

    def aliases_of(self, version: Any) -> list[str]:
        number = _version_str(version)
        return sorted(a for a, v in self.aliases().items() if v == number)

    def by_alias(self, alias: str):
        """The version holding ``alias``, or None."""
        holder = self.aliases().get(alias)
        return None if holder is None else self.client.get_model_version(self.name, holder)

    def champion(self):
        """The champion version; :class:`RegistryError` if there is none."""
        holder = self.by_alias(CHAMPION)
        if holder is None:
            raise RegistryError(
                f"{self.name} has no '{CHAMPION}' alias in the registry at {self.tracking_uri}: "
                "run the pipeline (`dvc repro register`) or `pets promote <version> --reason ...`."
            )
        return holder

    def find_by_run(self, run_id: str):
        """The version registered from ``run_id`` (tag ``run_id`` or its run), or None."""
        for v in self.versions():
            if v.tags.get(RUN_ID_TAG) == run_id or v.run_id == run_id:
                return v
        return None

    def unfinished(self) -> list:
        """Versions whose registration never completed (tag ``registration`` = started)."""
        return [v for v in self.versions() if (v.tags or {}).get(REGISTRATION_TAG) == STARTED]

    def unfinished_note(self, version: Any) -> str:
        """One line saying what an unfinished registration left and how it is finished."""
        number = _version_str(getattr(version, "version", version))
        aliases = self.aliases_of(number)
        held = f"holds only @{', @'.join(aliases)}" if aliases else "holds no alias"
        return (
            f"{self.name} v{number}: its registration did not finish (the register stage was "
            f"interrupted): it {held} and has no gate decision; `dvc repro register` finishes it"
        )

    def run_of(self, version) -> str:
        run_id = version.tags.get(RUN_ID_TAG) or version.run_id
        if not run_id:
            raise RegistryError(
                f"{self.name} version {version.version} has no source run (tag {RUN_ID_TAG!r}); "
                "it cannot be compared on test predictions."
            )
        return run_id

    def predictions(self, version) -> pd.DataFrame:
        """The per-image test predictions logged with the version's run."""
        run_id = self.run_of(version)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
            except Exception as error:  # missing artifact: MlflowException or OSError
                raise RegistryError(
                    f"run {run_id} (version {version.version} of {self.name}) has no "
                    f"{PREDICTIONS_ARTIFACT} artifact: {error}"
                ) from None
            return pd.read_csv(local)

    def history(self) -> list[AliasEvent]:
        """Every recorded alias move of this model, oldest first."""
        events = []
        for v in self.versions():
            for key, value in v.tags.items():
                if key.startswith(EVENT_PREFIX):
                    try:
                        events.append(AliasEvent(**json.loads(value)))
                    except (TypeError, ValueError):
                        log.warning("version %s: unreadable tag %s", v.version, key)
        return sorted(events, key=lambda e: (e.time, int(e.version)))

    def champion_record(self) -> dict[str, Any] | None:
        """What ``reports/registry.json`` remembers of the champion, to recover it if the
        store is lost: its version, run, strategy, run key, scores and the resolved location
        of its test predictions (artifacts usually outlive a deleted database)."""
        holder = self.by_alias(CHAMPION)
        if holder is None:
            return None
        run_id = holder.tags.get(RUN_ID_TAG) or holder.run_id
        predictions_uri = None
        if run_id:
            try:
                artifact_uri = self.client.get_run(run_id).info.artifact_uri
                predictions_uri = f"{artifact_uri.rstrip('/')}/{PREDICTIONS_ARTIFACT}"
            except Exception as error:  # the run is gone: record what is left
                log.warning("champion v%s: run %s unreadable (%s)", holder.version, run_id, error)
        tags = holder.tags
        return {
            "version": str(holder.version),
            "run_id": run_id,
            "strategy": tags.get("strategy"),
            "run_key": tags.get("run_key"),
            "git_commit": tags.get("git_commit"),
            "val_accuracy": float_or_none(tags.get("val_accuracy")),
            "test_accuracy": float_or_none(tags.get("test_accuracy")),
            "predictions_uri": predictions_uri,
        }

    @contextmanager
    def promotion_lock(self) -> Iterator[None]:
        """Serialise champion gates on this store (a file lock beside a SQLite database)."""
        from petsml.tracking.store import store_lock

        with store_lock(self.tracking_uri, "promote"):
            yield

    # ---- writing
    def register(
        self,
        model_uri: str,
        run_id: str,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ):
        """A new version from ``model_uri`` tagged with ``run_id`` (use find_by_run first)."""
        import mlflow

        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags[RUN_ID_TAG] = run_id
        with global_uri(self.tracking_uri):
            version = mlflow.register_model(model_uri, self.name, tags=all_tags)
        if description:
            self.describe(version.version, description)
        log.info("registered %s version %s from %s", self.name, version.version, model_uri)
        return self.client.get_model_version(self.name, version.version)

    def describe(self, version: Any, description: str) -> None:
        self.client.update_model_version(
            self.name, _version_str(version), description=description[:5000]
        )

    def set_tags(self, version: Any, tags: Mapping[str, Any]) -> None:
        number = _version_str(version)
        for key, value in tags.items():
            if value is not None:
                self.client.set_model_version_tag(self.name, number, key, str(value))

    def move_alias(self, alias: str, version: Any, action: str, reason: str) -> AliasEvent:
        """Point ``alias`` at ``version`` and record the move on that version."""
        number = _version_str(version)
        self.version(number)  # clear error for an unknown version
        previous = self.aliases().get(alias)
        event = AliasEvent(_now(), alias, number, previous, action, reason, _user())
        self.client.set_registered_model_alias(self.name, alias, number)
        self.client.set_model_version_tag(
            self.name, number, event.tag_key(), json.dumps(event.as_dict(), sort_keys=True)
        )
        log.info("%s@%s -> v%s (was %s): %s", self.name, alias, number, previous, reason)
        return event

    def promote(self, version: Any, reason: str, action: str = "promote") -> AliasEvent:
        """Make ``version`` the champion (no gate); remembers the champion it replaces."""
        number = _version_str(version)
        self.version(number)
        previous = self.aliases().get(CHAMPION)
        if previous == number:
            raise RegistryError(f"version {number} is already the {CHAMPION} of {self.name}.")
        if previous is not None:
            self.client.set_model_version_tag(self.name, number, PREVIOUS_CHAMPION_TAG, previous)
        return self.move_alias(CHAMPION, number, action, reason)

    def rollback(self, reason: str | None = None) -> AliasEvent:
        """Give ``champion`` back to the version the current champion replaced."""
        current = self.champion()
        previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise RegistryError(
                f"{self.name} version {current.version} is the {CHAMPION} and replaced no "
                f"earlier champion (no '{PREVIOUS_CHAMPION_TAG}' tag): nothing to roll back to. "
                "Use `pets promote <version> --reason ...` to pick one by hand."
            )
        self.version(previous)  # it may have been deleted
        why = reason or f"rollback from version {current.version}"
        return self.move_alias(CHAMPION, previous, "rollback", why)
