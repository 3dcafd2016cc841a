"""Sweep members as flow runs on a Prefect work pool: a real `prefect server`, a `process` pool,
`prefect deploy --all` of prefect.yaml and two `prefect worker` processes, all on loopback.

What `prefect deploy --all` registered from prefect.yaml (the weekly schedule, the pool, the
checkout as working directory) is read back from the same server.

Two members (one per frozen strategy) run the real pipeline up to `track` on generated photos;
each is a run of the `pets-train/sweep-member` deployment that either worker may pick up, saves
its DVC experiment and logs its MLflow runs; the sweep's table is read back from those.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from petsml.testing.fakedata import MirrorServer, make_dataset, pack_archives
from petsml.testing.project import fake_data_params, make_project, run, tool_env
from pipelines.train import DEPLOYMENT_NAME, FLOW_NAME, WEEKLY_CRON
from tests.servers import free_port, start, stop, wait_http

pytestmark = [pytest.mark.slow(seconds=235), pytest.mark.integration]

STRATEGIES = ["feature_extractor", "svm_early"]
POOL = "pets-local"  # prefect.yaml's pool
DEPLOYMENT = "pets-train/sweep-member"
DEPLOYED = (f"{FLOW_NAME}/{DEPLOYMENT_NAME}", "pets-sweep/sweep", DEPLOYMENT)


def _prefect_env(api: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in tool_env().items() if not k.startswith("PREFECT_")}
    env.pop("PYTHONPATH", None)  # flows load the project copy's own code
    env.update(PREFECT_API_URL=api, PREFECT_HOME=str(home), PREFECT_WORKER_QUERY_SECONDS="1")
    return env


def _read_deployments(names: tuple[str, ...]) -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(name) for name in names}


@pytest.fixture(scope="module")
def pooled_sweep(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.sweep import sweep

    root = tmp_path_factory.mktemp("pool")
    make_dataset(root / "src", per_breed=6, test_per_breed=2)
    md5 = pack_archives(root / "src", root / "mirror")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(api, root / "prefect-home")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{root / 'prefect.db'}"
    log = root / "prefect-server.log"
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
               "--no-ui", "--analytics-off", "--no-scheduler"]  # fmt: skip
    server = start(command, log, cwd=root, env=env)
    workers = []
    try:
        wait_http(f"{api}/health", server, log)
        with MirrorServer(root / "mirror") as mirror:
            overrides = fake_data_params(mirror.url, md5) | {
                "model.image_size": 64,
                "features.batch_size": 32,
            }
            project = make_project(root / "p", overrides)
            run(project, "prefect", "work-pool", "create", POOL, "--type", "process", env=env)
            run(project, "prefect", "--no-prompt", "deploy", "--all", env=env, timeout=300)
            for i in range(2):
                workers.append(start(
                    ["prefect", "worker", "start", "--pool", POOL, "--name", f"worker-{i}"],
                    root / f"worker-{i}.log", cwd=project, env=env,
                ))  # fmt: skip
            with temporary_settings({PREFECT_API_URL: api}):
                deployed = _read_deployments(DEPLOYED)
                state = sweep(
                    project_dir=str(project), strategies=STRATEGIES, deployment=DEPLOYMENT,
                    max_parallel=2, retry_delay_s=0, return_state=True,
                )  # fmt: skip
        logs = "\n".join((root / f"worker-{i}.log").read_text() for i in range(2))
        return project, state, logs, deployed
    finally:
        for worker in workers:
            stop(worker)
        stop(server)


def test_every_member_ran_on_a_worker_and_recorded_its_experiment_and_runs(pooled_sweep):
    from mlflow import MlflowClient

    from pipelines.dvc_graph import experiments

    project, state, logs, _ = pooled_sweep
    assert state.is_completed(), state.message
    rows = state.result()
    assert sorted(row["strategy"] for row in rows) == sorted(STRATEGIES)
    assert all(row["state"] == "Completed" for row in rows), rows
    assert "worker-0" in logs or "worker-1" in logs

    recorded = experiments(project)
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for row in rows:
        # the row is what the member logged: its DVC experiment's metrics and MLflow run
        exp = recorded[row["experiment"]]
        metrics = exp["metrics"][f"reports/metrics/{row['strategy']}.json"]
        assert row["val_accuracy"] == round(metrics["val_accuracy"], 4)
        assert row["test_accuracy"] == round(metrics["test_accuracy"], 4)
        parent = client.get_run(row["mlflow_parent_run_id"])
        assert parent.info.status == "FINISHED"
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        assert [c.data.tags["strategy"] for c in children] == [row["strategy"]]
        assert round(children[0].data.metrics["val_accuracy"], 4) == row["val_accuracy"]


def test_prefect_deploy_all_registered_prefect_yaml(pooled_sweep):
    project, _, _, deployed = pooled_sweep
    weekly, sweeper, member = (deployed[name] for name in DEPLOYED)
    assert [s.schedule.cron for s in weekly.schedules] == [WEEKLY_CRON]
    assert weekly.schedules[0].active and weekly.schedules[0].schedule.timezone == "UTC"
    assert weekly.work_pool_name == POOL and sweeper.schedules == [] and member.schedules == []
    step = weekly.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    assert Path(step["directory"]) == project.resolve()
