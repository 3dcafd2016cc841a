"""What the flow's stage task takes for DVC's run-cache race (two sweep members saving the same
entry over one cache): the message DVC prints then, and nothing else."""

from __future__ import annotations

from pipelines.dvc_stage import run_cache_race

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
