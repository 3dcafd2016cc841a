"""The Prefect task ``dvc-stage``: one ``dvc repro --single-item <stage>``, with retries/timeout.

DVC still decides whether the stage is up to date; the task streams its output into the task
log, reports what DVC did (``ran``, ``restored`` from the run cache, ``skipped``), and turns
every way it can stop (exit code, timeout, a Prefect error) into :class:`StageFailed` naming
the stage, so the flow run's state message says which stage failed and why.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as current_task_run
from prefect.tasks import exponential_backoff

from pipelines.shell import KILL_GRACE_S, error_detail, stream_command

DEFAULT_STAGE_TIMEOUT_S = 6 * 3600.0
DEFAULT_RETRY_STAGES = ("download",)  # the stages that touch the network

# DVC lists a stage's run-cache folder and reads each entry's mtime; a run of the same stage in
# another workspace (two sweep members over one cache) may rename its temporary entry in between,
# and DVC fails with "No such file or directory: .../.dvc/cache/runs/.../.<random>.tmp". The
# other run has then saved the entry, so running the stage again restores it.
_RUN_CACHE_RACE = re.compile(r"No such file or directory: '[^']*/runs/[^']*/\.[^'/]*\.tmp'")
RUN_CACHE_RACE_RETRIES = 2


def run_cache_race(stderr: str) -> bool:
    """Whether a failed ``dvc repro`` lost the race on a run-cache entry another run wrote."""
    return bool(_RUN_CACHE_RACE.search(stderr))


def repro_past_run_cache_races(
    run_once: Callable[[], tuple[int, list[str]]], on_race: Callable[[], None]
) -> tuple[int, list[str]]:
    """``run_once()`` (exit code, stderr tail), again after each lost run-cache race (at most
    :data:`RUN_CACHE_RACE_RETRIES` times, ``on_race()`` before each); any other outcome is
    returned as it is."""
    for race in range(RUN_CACHE_RACE_RETRIES + 1):
        returncode, stderr_tail = run_once()
        lost = returncode != 0 and run_cache_race("\n".join(stderr_tail))
        if not lost or race == RUN_CACHE_RACE_RETRIES:
            break
        on_race()
    return returncode, stderr_tail


_STATUS = (
    ("Running stage '", "ran"),
    ("is cached - skipping run", "restored"),
    ("didn't change, skipping", "skipped"),
)


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message names the stage and quotes its own error."""

    def __init__(self, stage: str, detail: str, returncode: int | None = None) -> None:
        self.stage = stage
        self.detail = detail
        self.returncode = returncode
        code = f" (exit {returncode})" if returncode is not None else ""
        super().__init__(f"DVC stage '{stage}' failed{code}: {detail}")


class StageTimeout(StageFailed):
    """A DVC stage ran past ``stage_timeout_s``; its process group was killed."""


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_dvc_stage(
    stage: str,
    workspace: str,
    force: bool = False,
    timeout_s: float = DEFAULT_STAGE_TIMEOUT_S,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``dvc repro --single-item <stage>`` in ``workspace``; DVC skips it when unchanged."""
    logger = get_run_logger()
    status = {"value": "unknown"}

    def watch(name: str, line: str) -> None:
        if name == "stdout" and status["value"] == "unknown":
            for marker, value in _STATUS:
                if marker in line:
                    status["value"] = value

    cmd = ["dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    started = time.monotonic()

    def run_once() -> tuple[int, list[str]]:
        remaining = timeout_s - (time.monotonic() - started)
        return stream_command(cmd, Path(workspace), logger, remaining, extra_env, on_line=watch)

    def on_race() -> None:
        logger.warning("stage %s: another run was saving the same run-cache entry; again", stage)
        status["value"] = "unknown"

    try:
        returncode, stderr_tail = repro_past_run_cache_races(run_once, on_race)
    except TimeoutError as error:
        raise StageTimeout(stage, f"{error}; killed it (raise timeout_s?)") from None
    seconds = round(time.monotonic() - started, 2)
    if returncode != 0:
        raise StageFailed(stage, error_detail(stderr_tail), returncode)
    attempt = current_task_run.run_count or 1
    logger.info("stage %s: %s in %.1f s (attempt %d)", stage, status["value"], seconds, attempt)
    return {"stage": stage, "status": status["value"], "seconds": seconds, "attempts": attempt}


def stage_options(
    stage: str, timeout_s: float, retried: Collection[str], retries: int, retry_delay_s: float
) -> dict[str, Any]:
    """How ``stage``'s task runs: its timeout, and retries when it (or its foreach) is retried."""
    # Prefect's timeout is the backstop; the task's own deadline (timeout_s) fires first,
    # kills the stage's process group and names the stage.
    options: dict[str, Any] = {"timeout_seconds": timeout_s + KILL_GRACE_S + 10}
    if stage in retried or stage.split("@", 1)[0] in retried:
        options["retries"] = retries
        delays = exponential_backoff(backoff_factor=retry_delay_s)(retries) if retries else []
        options["retry_delay_seconds"] = delays
    return {"options": options, "timeout_s": timeout_s}


def repro_stage(
    stage: str, workspace: str, force: bool, config: dict[str, Any], extra_env: dict[str, str]
) -> dict[str, Any]:
    """One stage task; whatever stops it, the error that reaches the flow names the stage."""
    runner = run_dvc_stage.with_options(**config["options"])
    try:
        return runner(stage, workspace, force, config["timeout_s"], extra_env)
    except StageFailed:
        raise
    except Exception as error:
        raise StageFailed(stage, f"{type(error).__name__}: {error}") from error
