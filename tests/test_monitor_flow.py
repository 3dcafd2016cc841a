"""The ``monitor`` flow on a real Prefect server: Completed on an unshifted window with no
retraining started; Failed with the verdict line on a shifted one, and with
``monitor.retrain_on_drift`` a flow run of the retraining deployment created on this project
(not waited for). prefect.yaml deploys it hourly on the pool of the other deployments.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from petsml.testing.project import REPO
from pipelines.monitor import DEPLOYMENT_NAME, FLOW_NAME, monitor_flow
from pipelines.train import train_pipeline
from tests.loop import loop_project, recording_model, shifted, val_files

pytestmark = pytest.mark.integration

RETRAIN = "retrain-on-drift"


def _runs_of(deployment_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        ids = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        return client.read_flow_runs(deployment_filter=ids)


def test_drift_fails_the_flow_run_and_starts_retraining(prefect_server, tmp_path):
    project, uri = loop_project(tmp_path, retrain_on_drift=True)
    deployment_id = train_pipeline.to_deployment(name=RETRAIN).apply()
    files = val_files(project)
    model = recording_model(project, uri)
    model.predict(pd.DataFrame({"image": files}))
    kwargs = dict(project_dir=str(project), tracking_uri=uri,
                  retrain_deployment=f"{train_pipeline.name}/{RETRAIN}")  # fmt: skip

    state = monitor_flow(**kwargs, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["verdict"] == "ok"
    assert _runs_of(deployment_id) == []

    model.predict(pd.DataFrame({"image": [shifted(f) for f in files]}))
    state = monitor_flow(**kwargs, return_state=True)
    assert state.is_failed() and state.message.startswith("DRIFT oxford-pets-breed v1")
    (run,) = _runs_of(deployment_id)
    assert run.parameters == {"project_dir": str(project)}
    assert str(run.id) in state.message and run.state.is_scheduled()


def test_prefect_yaml_runs_the_monitor_hourly_on_the_pool_of_the_others():
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    monitor = next(d for d in config["deployments"] if d["name"] == DEPLOYMENT_NAME)
    assert load_flow_from_entrypoint(str(REPO / monitor["entrypoint"])).name == FLOW_NAME
    assert [s["cron"] for s in monitor["schedules"]] == ["0 * * * *"]
    pools = {d["work_pool"]["name"] for d in config["deployments"]}
    assert pools == {monitor["work_pool"]["name"]}
