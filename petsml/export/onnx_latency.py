"""Batch-1 latency (p50/p95) and the machine it was measured on.

One image at a time is what a phone or an edge box serving a camera does; the figures are
wall-clock milliseconds per call after warm-up, with the thread count recorded because it moves
them more than anything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from petsml.models.precision import cpu_model_and_flags

# CPU flags that decide how fast fp32/int8 kernels run (VNNI: int8 dot products)
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
         "amx_bf16", "asimd", "asimddp")  # fmt: skip


def _stats(times: list[float]) -> dict:
    arr = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
        "runs": len(times),
    }


def latency_ms(
    calls: Mapping[str, Callable[[], object]], *, runs: int = 50, warmup: int = 5
) -> dict[str, dict]:
    """p50/p95/mean milliseconds of each ``call()`` over ``runs`` timed calls after ``warmup``.

    The calls take turns (one of each per round), so load from other processes on a shared
    machine hits every model alike and the ratios between them stay meaningful.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, runs)):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000.0)
    return {name: _stats(found) for name, found in times.items()}


def machine(threads: int) -> dict:
    """CPU model, the SIMD flags that matter for fp32/int8 inference, threads, load."""
    import os

    model, present = cpu_model_and_flags()
    flags = [f for f in FLAGS if f in present]
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": model,
        "flags": flags,
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average": load,
    }
