"""Shared fixtures: generated Oxford-IIIT-layout archives, a loopback mirror of them, a tiny model.

Helpers that are plain functions live in modules beside this one (``project``, ``fakedata``,
``models``, ``serving``, ``tracking``, ``predictions``); a test module never imports another
(``test_layout.py``). Session scope: the archives are read-only inputs, built once per run.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) every test must:
- bind port 0 (never a fixed port), write only under ``tmp_path``/``tmp_path_factory``, and
  restore any env var, cwd, signal handler or torch thread count it changes;
- expect its module to run whole on one worker (each module is its own ``xdist_group``, so a
  module fixture is built once), but session fixtures once per worker: modules sharing an
  expensive session fixture name one ``pytest.mark.xdist_group`` (``pytestmark = ...``);
- mark a module taking over ~30 s ``pytest.mark.slow``: slow groups start first, so the two
  workers end together. Workers run torch and child processes on one thread each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakedata import FakeDataset, MirrorServer, make_dataset, pack_archives


@dataclass(frozen=True)
class FakeArchives:
    """``images.tar.gz`` and ``annotations.tar.gz`` in ``folder``, their md5, the source photos."""

    dataset: FakeDataset
    folder: Path
    md5: dict[str, str]


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
def pipeline_run(tmp_path_factory):
    """The whole pipeline run once (``tests.project.run_whole_pipeline``): the e2e tests read
    it, the store-recovery tests copy it (both in xdist group ``pipeline_run``)."""
    from tests.project import run_whole_pipeline

    return run_whole_pipeline(tmp_path_factory.mktemp("e2e"))


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A saved tiny classifier (``model.pt``) over every breed, offline weights, no training."""
    from tests.models import make_tiny_model

    return make_tiny_model(tmp_path / "model.pt")


def pytest_configure(config) -> None:
    """An xdist worker shares 2 cores with another one: torch and child processes (DVC stages,
    servers) get one thread each instead of one per core each (oversubscribed, they thrash)."""
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def _group(item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist: a test without an ``xdist_group`` joins its module's group (module fixtures
    are built once), and groups holding a ``slow`` test come first (the longest start first;
    ``--no-loadscope-reorder`` keeps that order)."""
    if not hasattr(config, "workerinput"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    slow = {_group(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _group(item) not in slow)
