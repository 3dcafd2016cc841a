"""Several processes on one SQLite MLflow store, as sweep members are.

Each member logs a pipeline execution (parent run, child run with metrics, artifacts and a
real pyfunc model) and registers a version, all at once, starting from a store that does not
exist yet (the first contact creates its tables). Everything is read back with MlflowClient.
"""

from __future__ import annotations

import json

import pytest

from tests.tracking import run_sweep_members

pytestmark = [pytest.mark.slow(seconds=30), pytest.mark.integration]

MEMBERS = 3
NAME = "pets-sweep-breed"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"  # not there yet
    return root, uri, run_sweep_members(root, uri, NAME, MEMBERS)


def test_concurrent_members_all_complete_on_one_sqlite_store(swept):
    from mlflow import MlflowClient

    root, uri, exitcodes = swept
    assert exitcodes == [0] * MEMBERS
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    records = [json.loads((root / f"member{i}.json").read_text()) for i in range(MEMBERS)]
    experiment = client.get_experiment_by_name("sweep")
    assert len(client.search_runs([experiment.experiment_id])) == 2 * MEMBERS
    versions = {v.version: v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert sorted(int(v) for v in versions) == list(range(1, MEMBERS + 1))
    for record in records:
        runs, report = record["runs"], record["report"]
        for run_id in [runs["parent_run_id"], *runs["children"].values()]:
            assert client.get_run(run_id).info.status == "FINISHED"
        version = versions[int(report["version"])]
        assert version.run_id == runs["children"]["finetune_top"]
        assert version.tags["gate.decision"] in ("champion", "promoted", "rejected")
    # the members gate one after another: exactly one champion, and it is the best one
    champion = client.get_model_version_by_alias(NAME, "champion")
    best = max(records, key=lambda r: int(r["runs"]["run_key"].removeprefix("member")))
    assert champion.version == int(best["report"]["version"])
