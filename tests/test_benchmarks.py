"""The benchmarks still run (tiny settings, CPU) and cannot flatter: a figure in docs/BENCHMARKS.md
must stay reproducible, name its machine, and never beat its own model-only ceiling unannounced."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from petsml.testing.fakedata import make_dataset

pytestmark = [pytest.mark.slow(seconds=45), pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--decode-size", "40"]
# "  <label>   <x> images/s  [<precision> <memory format>]<the rest>"
FIGURE = re.compile(r"^  ([a-z][a-z_ +()]*?) +([\d.]+) images/s  (\[[^]]+\])(.*)$", re.M)
KINDS = ("naive", "project", "model only")


def bench_module(name: str):
    """``benchmarks/<name>.py``, which run as ``python -m benchmarks.<name>`` from the root."""
    return importlib.import_module(f"benchmarks.{name}")


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((x for x in text.splitlines() if x.startswith("flags")), "flags:")
    return set(line.split(":", 1)[1].split())


def check_honest(out: str, sections: int) -> None:
    """Every figure names precision and format; the project never beats its ceiling silently."""
    machine = re.findall(
        r"^machine: cpu '.+', flags \[(.*?)\], \d+ cores, \d+ torch threads", out, re.M
    )
    assert len(machine) == sections, out
    for flag in {"avx2", "avx512_bf16", "amx_bf16"} & cpu_flags():
        assert flag in machine[0].split(), (flag, machine[0])
    figures = [
        (next(k for k in KINDS if label.startswith(k)), label, value, tags, rest)
        for label, value, tags, rest in FIGURE.findall(out)
    ]
    assert {kind for kind, *_ in figures} == set(KINDS), out
    for _, label, value, tags, rest in figures:
        assert float(value) > 0, (label, value)
        assert re.fullmatch(r"\[(bf16|fp32) (channels_last|NCHW)( \+compile)?\]", tags), tags
        if label in ("naive", "naive (tutorial)"):
            assert tags == "[fp32 NCHW]", tags  # the tutorial's path
        if "of model-only" in rest or "ceiling" in rest:
            ratio = re.search(r"(\d+)% of model-only", rest)
            assert "WARNING: the ceiling is wrong" in rest or int(ratio.group(1)) <= 105, rest
    project = {tags for kind, _, _, tags, _ in figures if kind == "project"}
    ceiling = {tags for kind, _, _, tags, _ in figures if kind == "model only"}
    assert project == ceiling, (project, ceiling)  # the ceiling runs what the project runs


def test_ceiling_over_100_percent_prints_a_warning_never_the_ratio():
    machine = bench_module("machine")
    assert machine.of_ceiling(90, 100) == "90% of model-only"
    assert "noise" in machine.of_ceiling(103, 100)
    flattering = machine.of_ceiling(258, 100)
    assert flattering.startswith("WARNING: the ceiling is wrong"), flattering
    assert "of model-only" in flattering and "258%" in flattering


def test_header_names_cpu_flags_threads_and_tags_name_precision_and_format():
    machine = bench_module("machine")
    head = machine.header()
    assert head.startswith("machine: cpu '") and f"{torch.get_num_threads()} torch threads" in head
    for flag in set(machine.FLAGS) & cpu_flags():
        assert flag in head, (flag, head)
    assert machine.tag(True, torch.channels_last) == "[bf16 channels_last]"
    assert machine.tag(False, torch.contiguous_format, compiled=True) == "[fp32 NCHW +compile]"


@pytest.fixture(scope="module")
def gpu_sh_on_cpu(tmp_path_factory) -> str:
    """benchmarks/gpu.sh as the GPU run would call it, on the CPU with a tiny backbone."""
    env = dict(os.environ) | {
        "PYTHON": sys.executable, "DEVICE": "cpu", "BACKBONE": "test_efficientnet",
        "EXTRACT_BACKBONE": "test_efficientnet", "BATCH": "4", "IMAGES": "12", "EPOCHS": "1",
        "COMPILE": "off", "WORKERS": "1", "SIZES": " ".join(TINY),
        "TMPDIR": str(tmp_path_factory.mktemp("gpu_sh")),
    }  # fmt: skip
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True, text=True,
        timeout=600, cwd=REPO, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_gpu_sh_runs_on_cpu_with_a_tiny_backbone_and_prints_honest_figures(gpu_sh_on_cpu):
    out = gpu_sh_on_cpu
    assert re.search(r"^== machine: .*load", out, re.M) and "torch 2." in out, out
    finetune, extraction = out.split("== test_efficientnet frozen feature extraction")
    assert "== test_efficientnet full fine-tuning, torch.compile off" in finetune, out
    check_honest(finetune, sections=1)
    check_honest(extraction, sections=1)
    assert len(re.findall(r"^  peak memory \(RSS", out, re.M)) == 2, out
    assert len(re.findall(r"^speedup: \d+\.\d\d$", out, re.M)) == 2, out


def test_throughput_prints_machine_precision_format_and_ceilings(tmp_path):
    ds = make_dataset(tmp_path / "photos", per_breed=6, test_per_breed=0, quirks=False)
    cmd = [
        sys.executable, "-m", "benchmarks.throughput", str(ds.root),
        "--backbone", "test_efficientnet", "--random-init", *TINY, "--epochs", "1",
        "--batch-size", "4", "--workers", "0",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    check_honest(out.stdout, sections=1)
    # each project figure is held against its ceiling: a ratio, or the warning (which also
    # names "% of model-only") when a tiny, noisy run lands over it; one per line
    against = r"^\s+project.*(% of model-only|ceiling is wrong)"
    assert len(re.findall(against, out.stdout, re.M)) == 2, out.stdout
    assert re.search(r"^speedup: \d+\.\d\d$", out.stdout, re.M), out.stdout


def test_similar_benchmark_compares_exact_searches_that_agree():
    cmd = [sys.executable, "-m", "benchmarks.similar", "--sizes", "400", "--no-photos"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("cpu ") and "load average" in out.stdout
    pattern = r"^  (numpy matmul|sklearn brute cosine)\s+(1|64) queries: .*same top-8 (\d+)%"
    lines = re.findall(pattern, out.stdout, re.M)
    assert len(lines) == 4, out.stdout
    assert all(same == "100" for *_, same in lines), out.stdout  # exact: the same neighbours
    assert "faiss IndexFlatIP" in out.stdout  # timed, or skipped with the reason


# "  <configuration>  <val acc>  <mean> ± <std>  <min>–<max>  <paired Δ> ± <std>  <seeds>[  <note>]"
ACCURACY_ROW = re.compile(
    r"^  (\S.*?) +(\d\.\d{3})  (\d\.\d{3}) ± (\d\.\d{3}|  -  )  (\d\.\d{3})–(\d\.\d{3})  "
    r"([+-]\d\.\d{3}) ± (?:\d\.\d{3}|  -  ) +(\d+)(?:  (.*))?$",
    re.M,
)


def test_accuracy_splits_are_disjoint_stratified_and_seeded(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # accuracy.py imports machine.py
    accuracy = bench_module("accuracy")
    import pandas as pd

    ids = [f"{breed}_{i}" for breed in ("Abyssinian", "pug", "beagle") for i in range(1, 11)]
    frame = pd.DataFrame({"image_id": ids})
    frame["breed"] = frame.image_id.str.rsplit("_", n=1).str[0]
    splits = [accuracy.seeded_split(frame, seed, 0.3, 0.25) for seed in (0, 0, 1)]
    for train, val, test in splits:
        assert (
            len(set(train) | set(val) | set(test))
            == len(frame)
            == len(train) + len(val) + len(test)
        )
        for part, per_breed in ((train, 5), (val, 2), (test, 3)):
            assert frame.breed.iloc[part].value_counts().tolist() == [per_breed] * 3
    assert all((a == b).all() for a, b in zip(splits[0], splits[1], strict=True))  # seeded
    assert not (splits[0][2] == splits[2][2]).all()  # another seed, another test slice


def test_accuracy_benchmark_prints_a_table_over_seeded_splits(tmp_path):
    ds = make_dataset(tmp_path / "photos", per_breed=6, test_per_breed=0, quirks=False)
    cmd = [
        sys.executable, "-m", "benchmarks.accuracy", str(ds.root), "--seeds", "2",
        "--backbones", "test_efficientnet@36", "test_efficientnet@40", "--image-size", "32",
        "--random-init", "--finetune-seeds", "1", "--finetune-lrs", "1e-3",
        "--finetune-epochs", "1", "--workers", "1", "--batch-size", "8", "--cost-rounds", "1",
        "--cost-batch", "4",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"^machine: cpu '.+', flags \[.*\], \d+ cores, .*load average", text, re.M)
    rows = {label: rest for label, *rest in ACCURACY_ROW.findall(text)}
    sets = ["test_efficientnet@36", "test_efficientnet@40"]
    variants = ["", " + flip TTA", " + flip train", " + flip train + flip TTA"]
    both = "+".join(sets)
    expected = [f"probe {s}{v}" for s in sets for v in variants] + [
        f"{kind} {both}{v}"
        for kind in ("concat", "prob-avg")
        for v in ("", " + flip train + flip TTA")
    ]
    picked = max(sets, key=lambda s: float(rows[f"probe {s}"][0]))  # LP-FT: best probe on val
    lpft = [f"probe {picked} (same splits as LP-FT)", f"LP-FT finetune_top {picked}"]
    lpft.append(lpft[-1] + " + flip TTA")
    assert sorted(rows) == sorted(expected + lpft), text
    for label, (val, mean, std, low, high, delta, seeds, note) in rows.items():
        assert 0 <= float(low) <= float(mean) <= float(high) <= 1 and 0 <= float(val) <= 1, label
        if label == f"probe {sets[0]}":
            assert delta in ("+0.000", "-0.000"), delta  # the reference, against itself
        assert seeds == ("1" if label in lpft else "2"), (label, seeds)
        assert (note == "1 of 2 splits") == (label in lpft), (label, note)
        assert (std == "  -  ") == (label in lpft), (label, std)  # one split has no spread
    best = re.search(
        r"^best on validation \(mean over 2 splits\): (.+): val (\S+), test", text, re.M
    )
    assert best and best.group(1) in expected, text
    assert float(best.group(2)) == max(float(rows[k][0]) for k in expected)  # picked on val
    speeds = re.search(r"^extraction images/s \[(bf16|fp32) channels_last\]: (.+)$", text, re.M)
    assert speeds and [s.split()[0] for s in speeds.group(2).split(", ")] == sets, text
    cost = re.search(r"^frozen forward, interleaved \(1 rounds of 4 .*\]: (.+)$", text, re.M)
    assert cost and re.fullmatch(
        r"test_efficientnet@36 [\d.]+ images/s \(1\.00x\), test_efficientnet@40 [\d.]+ images/s "
        r"\([\d.]+x\)", cost.group(1)
    ), text  # fmt: skip
    seconds = re.search(r"^seconds: decode \d+, features \d+, forward cost \d+, probes \d+, "
                        r"ensembles \d+, "
                        r"finetune \d+, total \d+; load average now", text, re.M)  # fmt: skip
    assert seconds, text
