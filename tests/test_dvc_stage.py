"""What the flow's stage task takes for DVC's run-cache race (two sweep members saving the same
entry over one cache): the message DVC prints then, and nothing else; and that a stage which
lost it runs again, a bounded number of times, while any other failure stops it."""

from __future__ import annotations

from pipelines.dvc_stage import RUN_CACHE_RACE_RETRIES, repro_past_run_cache_races, run_cache_race

RACE = (
    "ERROR: failed to reproduce 'featurize': [Errno 2] No such file or directory: "
    "'/tmp/p/.dvc/cache/runs/8e/8e6475aeeff038c363c08841df786f612ad5e70b0533eff3680908b751bd4a"
    "b6/.KPfDs0ZxayAoYpulSYibHQ.tmp'"
)


def test_the_run_cache_race_is_told_apart_from_other_missing_files():
    assert run_cache_race("19:58:10 INFO petsml.training.features: test: 7 images\n" + RACE)
    assert not run_cache_race(
        "ERROR: failed to reproduce 'featurize': [Errno 2] No such file or directory: "
        "'data/decoded/images_u8.npy'"
    )
    assert not run_cache_race(
        "ERROR: [Errno 2] No such file or directory: '/tmp/p/.dvc/cache/files/md5/8e/1234'"
    )


def _outcomes(*results: tuple[int, list[str]]):
    """``run_once`` answering ``results`` in turn, and the list of calls made."""
    calls: list[int] = []

    def run_once() -> tuple[int, list[str]]:
        calls.append(len(calls))
        return results[len(calls) - 1]

    return run_once, calls


def test_a_stage_that_lost_the_race_runs_again_and_other_failures_do_not():
    races: list[int] = []
    run_once, calls = _outcomes((255, [RACE]), (0, []))
    assert repro_past_run_cache_races(run_once, lambda: races.append(1)) == (0, [])
    assert len(calls) == 2 and len(races) == 1

    other = (1, ["ERROR: failed to reproduce 'featurize': out of memory"])
    run_once, calls = _outcomes(other, (0, []))
    assert repro_past_run_cache_races(run_once, lambda: None) == other
    assert len(calls) == 1

    lost = (255, [RACE])
    run_once, calls = _outcomes(*[lost] * (RUN_CACHE_RACE_RETRIES + 2))
    assert repro_past_run_cache_races(run_once, lambda: None) == lost
    assert len(calls) == RUN_CACHE_RACE_RETRIES + 1  # bounded
