"""Which numeric precision the networks run in: bf16 autocast where the hardware does bf16 natively.

bf16 halves memory traffic and, on hardware with bf16 dot products, doubles matrix throughput;
without them it is emulated and slow (measured on an AVX2-only EPYC: a Lite0 fine-tuning step
ran at 5 images/s in bf16 against 60 in fp32). So ``auto`` means bf16 on CUDA GPUs that support
it and on CPUs that report ``avx512_bf16`` or ``amx_bf16``, fp32 everywhere else. On a 2-core
AMD EPYC with ``avx512_bf16`` (``benchmarks/precision.py``, interleaved runs on a loaded shared
machine) bf16 was faster for Lite0 feature extraction (x1.4; x2 for a bare batched forward) and
for ``finetune_top`` (x1.2), at the same accuracy on the 372 real photos over 3 seeded splits
(probe 0.856 vs 0.851, ``finetune_top`` 0.856 vs 0.853): ``auto`` keeps bf16 there. bf16 moves
the pooled features by ~2% (``tests/test_precision.py`` holds it under 5%).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """The CPU's model name and every flag it reports (Linux ``/proc/cpuinfo``; ``Features`` on
    ARM): the one reader behind the precision choice, the export timings and the benchmarks."""
    import platform

    model, flags = platform.processor() or platform.machine() or "?", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        if line.startswith("model name") and model in ("?", platform.machine()):
            model = line.split(":", 1)[1].strip()
        elif line.startswith(("flags", "Features")) and not flags:
            flags = frozenset(line.split(":", 1)[1].split())
    return model, flags


def cpu_has_native_bf16() -> bool:
    flags = cpu_model_and_flags()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether to autocast to bf16 on ``device`` under ``model.precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"model.precision must be one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
