"""Shared fixtures: generated Oxford-IIIT-layout archives, a loopback mirror of them, a temporary
Prefect server, a tiny model.

Helpers that are plain functions live in modules beside this one (``project``, ``fakedata``,
``models``, ``serving``, ``tracking``, ``predictions``); a test module never imports another
(``test_layout.py``). Session scope: the archives are read-only inputs, built once per run.

Under pytest-xdist (``make test`` runs ``-n 3 --dist loadfile``) every test must:
- bind port 0 (never a fixed port), write only under ``tmp_path``/``tmp_path_factory``, and
  restore any env var, cwd, signal handler or torch thread count it changes;
- expect its module to run whole on one worker (module fixtures are built once), but session
  fixtures once per worker that uses them: modules sharing an expensive session fixture are
  listed in ``XDIST_SHARED`` below (one worker runs them all);
- mark a module taking over ~30 s ``pytestmark = pytest.mark.slow(seconds=N)``, N its time in
  the suite on the 2-core CI machine: the longest (a shared scope counts its modules together)
  start first, so the workers end together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


def _share_cores_among_workers() -> None:
    """Under xdist, give each worker's processes (and the stages, servers and tools they start)
    its share of the cores as compute threads, before anything imports torch or numpy.

    Two workers on two cores each running two-thread torch/OpenBLAS processes keep threads
    waiting on descheduled peers: a generated-data pipeline run costs 11 % more CPU with two
    threads than with one on this project's 2-core machine (123 s against 110 s), and the
    suite is CPU-bound. A value already set in the environment wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = str(max(1, (cores or 1) // workers))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, threads)


_share_cores_among_workers()

# --cpu-load N / PETSML_TEST_CPU_LOAD=N: the run under background load (docs/DEVELOPING.md)
from petsml.testing.fakedata import FakeDataset, MirrorServer, make_dataset, pack_archives  # noqa: E402
from tests import cpu_load  # noqa: E402
from tests.cpu_load import (  # noqa: E402, F401
    pytest_configure,
    pytest_report_header,
    pytest_unconfigure,
)

# Fixtures shared by a few modules, kept beside the data they build.
pytest_plugins = [
    "tests.finetune_data",
    "tests.download_data",
    "tests.registry_data",
    "tests.evaluate_data",
]


@dataclass(frozen=True)
class FakeArchives:
    """``images.tar.gz`` and ``annotations.tar.gz`` in ``folder``, their md5, the source photos."""

    dataset: FakeDataset
    folder: Path
    md5: dict[str, str]


@pytest.fixture(autouse=True, scope="module")
def _no_registry_uri_from_another_module():
    """Each module starts and ends with MLflow's registry URI unset (it then follows the tracking
    URI): ``mlflow.set_registry_uri`` also exports ``MLFLOW_REGISTRY_URI``, and one left by an
    in-process command of an earlier module would send this module's ``models:/`` lookups, and
    the servers it starts, to another store."""
    import mlflow.tracking._model_registry.utils as registry_utils

    def clear() -> None:
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        registry_utils._registry_uri = None

    clear()
    yield
    clear()


@pytest.fixture(scope="session")
def fake_archives(tmp_path_factory) -> FakeArchives:
    """8 photos per breed (3 of them in the official test list), every breed, packed once."""
    root = tmp_path_factory.mktemp("fake")
    dataset = make_dataset(root / "src", per_breed=8, test_per_breed=3)
    return FakeArchives(dataset, root / "mirror", pack_archives(root / "src", root / "mirror"))


@pytest.fixture(scope="session")
def loopback_mirror(fake_archives):
    """An HTTP server on 127.0.0.1 serving :func:`fake_archives` (``.url``, ``.requests``)."""
    with MirrorServer(fake_archives.folder) as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A temporary Prefect API (SQLite in a temp dir); flow results stored in a temp dir too."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=180):
            yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The whole pipeline run once (:func:`petsml.testing.project.run_whole_pipeline`): the e2e
    tests read it, the store-recovery tests copy it (one xdist worker runs both)."""
    from petsml.testing.project import run_whole_pipeline

    return run_whole_pipeline(tmp_path_factory.mktemp("e2e"))


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A saved tiny classifier (``model.pt``) over every breed, offline weights, no training."""
    from tests.models import make_tiny_model

    return make_tiny_model(tmp_path / "model.pt")


@pytest.fixture(scope="session")
def registered_project(tmp_path_factory):
    """:func:`tests.tracking.build_project` tracked and registered in its own SQLite store:
    ``oxford-pets-breed`` version 1 is the champion, its neighbour index inside it. Yields
    (project, tracking URI, reports/registry.json). Built once per session (~40 s); the modules
    reading it share one xdist worker (``XDIST_SHARED``) and never change it."""
    from tests.tracking import register_in_own_store

    return register_in_own_store(tmp_path_factory.mktemp("registered"))


# Modules sharing an expensive session fixture run on the worker of the module they map to.
XDIST_SHARED = {
    "tests/test_store_recovery_e2e.py": "tests/test_pipeline_e2e.py",  # pipeline_run
    "tests/test_continuous_training.py": "tests/test_flows.py",  # prefect_server (~40 s)
    "tests/test_monitor_flow.py": "tests/test_flows.py",
    "tests/test_flows_recorded.py": "tests/test_flows.py",
    # registered_project (~40 s)
    "tests/test_mlflow_ui.py": "tests/test_cli_ui.py",
    "tests/test_server_signals.py": "tests/test_cli_ui.py",
    "tests/test_similar.py": "tests/test_cli_ui.py",
    "tests/test_web.py": "tests/test_cli_ui.py",
    "tests/test_web_page.py": "tests/test_cli_ui.py",
    "tests/test_pets_serve.py": "tests/test_cli_ui.py",
    "tests/test_pets_status.py": "tests/test_cli_ui.py",
}


def _scope(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return XDIST_SHARED.get(module, module)


def pytest_addoption(parser) -> None:
    cpu_load.pytest_addoption(parser)
    parser.addoption(
        "--fast-tier",
        action="store_true",
        help="the edit-run loop (`make test-fast`): any test that starts a process fails, "
        "naming itself - mark it `integration`",
    )


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request, monkeypatch):
    """Under ``--fast-tier`` a test that starts a subprocess or a multiprocessing worker is
    wrongly placed: it fails saying so, and the tier stays fast by construction."""
    if not request.config.getoption("--fast-tier"):
        return

    def refuse(*args, **kwargs):
        raise RuntimeError(
            f"{request.node.nodeid} starts a process: mark it pytest.mark.integration "
            "(the fast tier runs pure code only)"
        )

    import multiprocessing.process
    import subprocess

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


@pytest.fixture(autouse=True, scope="session")
def _stage_server(request, tmp_path_factory):
    """One stage server per worker (:mod:`petsml.stage_server`), as ``pets run`` starts one: the
    pipelines the tests run start each stage as a warm fork of it. A test that wants plain cold
    stages drops ``PETS_STAGE_SERVER`` from the environment it gives DVC."""
    if request.config.getoption("--fast-tier"):
        yield None
        return
    from petsml.stage_server import serving

    log = tmp_path_factory.mktemp("stage-server") / "server.log"
    with serving(log=log) as path:
        yield path


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the modules of :data:`XDIST_SHARED` on one worker (xdist's own
    ``loadgroup`` marks do nothing under pytest 9: it renames nodes in a way pytest 9 ignores)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return SharedFixtureScheduling(config, log)


SLOW_SECONDS = 30  # a ``slow`` mark that names no seconds


def _module_seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("slow")
    return float(mark.kwargs.get("seconds", SLOW_SECONDS)) if mark else 0.0


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist, the scopes holding ``slow`` modules come first, longest first: xdist hands
    each worker the next scope in this order as it runs low (``--no-loadscope-reorder`` keeps
    it), so the long ones overlap and the short ones fill in at the end. A scope's time is the
    sum of its modules' ``slow(seconds=...)``; the rest keep their collection order."""
    if not hasattr(config, "workerinput"):
        return
    module_seconds = {item.nodeid.split("::", 1)[0]: _module_seconds(item) for item in items}
    scope_seconds: dict[str, float] = {}
    for module, seconds in module_seconds.items():
        scope = _scope(module)
        scope_seconds[scope] = scope_seconds.get(scope, 0.0) + seconds
    items.sort(key=lambda item: -scope_seconds[_scope(item.nodeid)])
