"""What every benchmark here shares: the machine header, the per-line tags, timing, the ceiling.

A speed figure means little without the machine it came from (a CPU with native bf16 runs the
same model 2x faster than an AVX2-only one), the precision and memory format it ran in, and how
loaded a shared machine was. Every benchmark prints :func:`header` first and tags each figure
with :func:`tag`. A "model only" ceiling must run with the project path's precision and memory
format; :func:`of_ceiling` prints the ratio and, when the project beats its ceiling, says the
ceiling is wrong instead of printing a flattering percentage.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

# this checkout's petsml, also where it is not installed (benchmarks/gpu.sh on a bare machine)
from petsml.models.precision import cpu_model_and_flags as cpu_info  # noqa: E402

# The CPU flags that decide which kernels a run gets (bf16: native or emulated; AVX2/AVX-512).
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "neon")
CEILING_WARNING = "WARNING: the ceiling is wrong"
NOISE = 0.05  # a project figure this far over its ceiling is timing noise, not a wrong ceiling


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`FLAGS` it reports."""
    model, present = cpu_info()
    return model, [f for f in FLAGS if f in present]


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def header(device: torch.device | None = None) -> str:
    """One line naming the machine: CPU and flags, cores, torch threads, torch, GPU, load."""
    model, flags = cpu_model_and_flags()
    parts = [
        f"cpu {model!r}",
        f"flags [{' '.join(flags) or 'none of ' + '/'.join(FLAGS[:6])}]",
        f"{os.cpu_count()} cores",
        f"{torch.get_num_threads()} torch threads",
        f"torch {torch.__version__}",
    ]
    if device is not None and device.type == "cuda":
        parts.append(f"gpu {torch.cuda.get_device_name(device)!r}")
    parts.append(f"load average {load_average()}")
    return "machine: " + ", ".join(parts)


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


def format_name(memory_format: torch.memory_format) -> str:
    return "channels_last" if memory_format == torch.channels_last else "NCHW"


def tag(bf16: bool, memory_format: torch.memory_format, compiled: bool = False) -> str:
    """``[bf16 channels_last]``: what one figure ran in (``+compile`` when torch.compile'd)."""
    return f"[{precision_name(bf16)} {format_name(memory_format)}{' +compile' if compiled else ''}]"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[float, Any]:
    """Seconds ``fn()`` took (GPU work finished on both sides) and what it returned."""
    if device is not None:
        sync(device)
    started = time.perf_counter()
    out = fn()
    if device is not None:
        sync(device)
    return time.perf_counter() - started, out


def peak_rss_mib() -> float:
    """Peak resident memory of this process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def of_ceiling(project: float, ceiling: float) -> str:
    """``"87% of model-only"``, or a warning when the project beats its own ceiling.

    The model-only figure runs the same step as the project on a batch already in memory, so
    the project can only match it. Beating it (beyond 5% timing noise) means the two did not
    run the same work: a different precision, memory format or batch. Saying so is better than
    printing a ratio above 100%. Up to :data:`NOISE` over is reported as timing noise.
    """
    ratio = project / ceiling
    if ratio > 1 + NOISE:
        return (
            f"{CEILING_WARNING}: the project ran at {ratio:.0%} of model-only, so model-only "
            "is not the same work (check precision, memory format, batch)"
        )
    if ratio > 1:
        return f"{ratio:.0%} of model-only (over 100% by timing noise only: equal)"
    return f"{ratio:.0%} of model-only"
