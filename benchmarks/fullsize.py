"""The whole pipeline on a full-size stand-in of Oxford-IIIT Pet: time, memory and disk per stage.

Builds 37 breeds x PER_BREED generated photos at 500 x 375 px (``tests/fakedata.py``'s class
images, official archive layout and quirks, half of each breed in the official test list),
packs them as the official tarballs, copies this repository to a temporary folder pointed at
them (only ``data.*`` changes: every other parameter is the default, so the frozen CPU
strategies run) and runs one ``dvc repro``, streaming its output. It prints, per stage: the
seconds from its "Running stage" line to the next, the peak resident memory of the stage's
process tree (sampled every 0.2 s, summed over processes) and the size of its outputs; then
the peak RSS of the largest single process (``wait4``), the disk the project uses (hard links
counted once), a no-op ``dvc repro``, and what the DVC cache costs with each ``cache.type``
(``dvc checkout --relink`` turns the workspace copies into links of the cache, no re-run).

Heavy (about 1 GB of JPEGs, 1.5 GB of decoded cache, twice that with a copy cache): run it
once, niced, on an otherwise idle machine if you can; the header prints the load.

    python -m benchmarks.fullsize [--per-breed 200] [--workdir /tmp] [--keep]
    python -m benchmarks.fullsize --photos ../shared/pets-sample   # real photos instead

It ends with the advise stage's share of the whole run and, since the other stages scale with
the photo count while advise reads a capped subsample, that share estimated for the 7,349
photos of the real dataset (``--full-photos``): exact for advise when every class already
fills ``advise.max_train_per_class`` / ``max_val_per_class`` (37 x 40 stand-in photos do).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.machine import header, load_average  # noqa: E402
from petsml.stage_client import ENV  # noqa: E402
from petsml.stage_server import serving  # noqa: E402
from petsml.testing.fakedata import BREEDS, make_dataset, pack_archives  # noqa: E402
from petsml.testing.project import make_project, tool_env  # noqa: E402

STAGE_LINE = re.compile(r"Running stage '([^']+)'")
MIB = 2**20


def disk_bytes(*paths: Path) -> int:
    """Bytes on disk under ``paths``, each inode once (hard links and repeats are free)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        if not top.exists() and not top.is_symlink():
            continue
        walk = [top] if not top.is_dir() or top.is_symlink() else [top, *top.rglob("*")]
        for path in walk:
            st = path.lstat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants, attributed to the current stage."""

    def __init__(self, pid: int, interval: float = 0.2, server=None) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = psutil.Process(pid), interval
        # a stage server's forks are its children, not DVC's: sampled too (the server itself,
        # which holds the preloaded libraries the forks share, under "(stage server)")
        self.find_server = server or (lambda: None)  # () -> its pid, once it is up
        self.server: psutil.Process | None = None
        self.largest = 0  # the largest single process's RSS
        self.stage = "(dvc start)"
        self.peaks: dict[str, int] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds (user + system) by stage: load-independent
        self._seen: dict[int, float] = {}
        self.loads: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        last_load = 0.0
        while not self.done.is_set():
            if self.server is None and (pid := self.find_server()):
                self.server = psutil.Process(pid)
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            try:
                procs += self.server.children(recursive=True) if self.server else []
            except psutil.NoSuchProcess:
                self.server = None
            rss, cpu = 0, 0.0
            for proc in procs:
                try:
                    own = proc.memory_info().rss
                    times = proc.cpu_times()
                    used = times.user + times.system
                except psutil.Error:
                    continue
                rss += own
                self.largest = max(self.largest, own)
                cpu += used - self._seen.get(proc.pid, 0.0)
                self._seen[proc.pid] = used
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            self.cpu[self.stage] = self.cpu.get(self.stage, 0.0) + cpu
            if self.server is not None:
                with contextlib.suppress(psutil.Error):
                    times = self.server.cpu_times()
                    self.cpu["(stage server)"] = times.user + times.system
            if time.monotonic() - last_load > 10:
                self.loads.append(os.getloadavg()[0])
                last_load = time.monotonic()
            self.done.wait(self.interval)


def repro(
    project: Path, env: dict[str, str], server: str = "run"
) -> tuple[list[tuple[str, float]], TreeSampler, int]:
    """One ``dvc repro``: (stage, seconds) in order, the sampler (peak RSS and CPU seconds per
    stage, load averages) and the largest single process's peak RSS.

    ``server``: ``run``, as ``pets run`` (``make run``) runs it, under a stage server started at
    the same moment (not waited for: the first stages run cold while it imports); ``shared``,
    plain ``dvc repro`` (its first stage starts the shared server); ``off``, every stage cold."""
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(serving()) if server == "run" else None
        if server == "off":
            path = "off"
        env = env | ({ENV: path} if path else {})
        if server == "shared":
            env.pop(ENV, None)
        return _repro(project, env, server)


def _server_pid(kind: str) -> int | None:
    """The stage server whose forks run the stages (found once it is up)."""
    if kind == "off":
        return None
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "petsml.stage_server" in line and (kind == "shared") == ("--idle" in line):
            return proc.pid
    return None


def _repro(project: Path, env: dict[str, str], kind: str):
    proc = subprocess.Popen(
        ["dvc", "repro"], cwd=project, env=env | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )  # fmt: skip
    sampler = TreeSampler(proc.pid, server=lambda: _server_pid(kind))
    sampler.start()
    marks: list[tuple[str, float]] = [("(dvc start)", time.perf_counter())]
    log = []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)
        found = STAGE_LINE.search(line)
        if found:
            marks.append((found.group(1), time.perf_counter()))
            sampler.stage = found.group(1)
            print(f"  {time.strftime('%H:%M:%S')} {found.group(1)}", flush=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    end = time.perf_counter()
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"dvc repro failed ({proc.returncode}):\n{''.join(log[-80:])}")
    ends = [at for _, at in marks[1:]] + [end]
    times = [(name, stop - at) for (name, at), stop in zip(marks, ends, strict=True)]
    return times, sampler, max(usage.ru_maxrss * 1024, sampler.largest)


def stage_outputs(project: Path) -> dict[str, list[Path]]:
    """Each stage's outputs (foreach stages expanded as ``train@<item>``), from dvc.yaml."""
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    outs: dict[str, list[Path]] = {}
    for name, stage in declared.items():
        items = [None]
        if "foreach" in stage:
            items = params["train"]["strategies"]
            stage = stage["do"]
        for item in items:
            paths = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
            key = name if item is None else f"{name}@{item}"
            outs[key] = [project / p.replace("${item}", str(item)) for p in paths]
    return outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-breed", type=int, default=200, help="photos per breed (37 breeds)")
    parser.add_argument("--test-per-breed", type=int, help="of those, in the test list "
                        "(default: half)")  # fmt: skip
    parser.add_argument("--size", default="500x375", help="photo width x height")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where to build it all")
    parser.add_argument("--keep", action="store_true", help="keep the stand-in and the project")
    parser.add_argument(
        "--photos",
        help="an official-layout folder of real photos to pack instead of the generated "
        "stand-in (e.g. ../shared/pets-sample)",
    )
    parser.add_argument("--full-photos", type=int, default=7349, help="photo count to scale to")
    parser.add_argument("--server", choices=("run", "shared", "off"), default="run",
                        help="run: as `pets run` (a stage server for the run); shared: plain "
                        "`dvc repro` (the shared server its first stage starts); off: every "
                        "stage a new process")  # fmt: skip
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(header(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="pets-fullsize-", dir=args.workdir))
    print(f"working in {tmp} ({_fs_type(tmp)})", flush=True)
    try:
        started = time.perf_counter()
        if args.photos:
            source = Path(args.photos).resolve()
            photos = len(list((source / "images").glob("*.jpg")))
        else:
            source = tmp / "standin"
            ds = make_dataset(
                source, breeds=tuple(BREEDS), per_breed=args.per_breed,
                test_per_breed=args.test_per_breed if args.test_per_breed is not None
                else args.per_breed // 2, size=(width, height),
            )  # fmt: skip
            photos = len(ds.ids)
        md5 = pack_archives(source, tmp / "mirror")
        jpeg_bytes = disk_bytes(source / "images")
        what = f"photos from {source}" if args.photos else "stand-in"
        shape = "as they are" if args.photos else f"{width}x{height}"
        print(
            f"{what}: {photos} photos, {shape}, {jpeg_bytes / MIB:.0f} MiB of "
            f"JPEG, archives {disk_bytes(tmp / 'mirror') / MIB:.0f} MiB, built in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        overrides = {
            "data.base_url": str(tmp / "mirror"),
            "data.md5.images": md5["images"],
            "data.md5.annotations": md5["annotations"],
        }
        if args.photos or args.per_breed < 150:  # the official counts' check would stop it
            overrides["validate.min_images_per_breed"] = 1
        project = make_project(tmp / "project", overrides)
        pass_log = tmp / "passes.jsonl"
        env = tool_env(
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", PETS_PASS_LOG=str(pass_log)
        )
        how = {"run": "as pets run: a stage server for the run",
               "shared": "plain dvc repro: the shared stage server",
               "off": "PETS_STAGE_SERVER=off: every stage cold"}[args.server]  # fmt: skip
        print(f"dvc repro (default params, strategies {_strategies(project)}; {how}), started:")
        times, sampler, max_rss = repro(project, env, server=args.server)
        peaks, loads = sampler.peaks, sampler.loads
        outs = stage_outputs(project)
        total = sum(secs for _, secs in times)
        print(f"\n{'stage':<30}{'seconds':>9}{'CPU s':>8}{'peak RSS MiB':>14}{'outputs MiB':>13}")
        for name, secs in times:
            size = disk_bytes(*outs.get(name, []))
            print(
                f"{name:<30}{secs:>9.1f}{sampler.cpu.get(name, 0):>8.1f}"
                f"{peaks.get(name, 0) / MIB:>14.0f}{size / MIB:>13.0f}"
            )
        if "(stage server)" in sampler.cpu:  # its imports, while the first stages ran cold
            print(f"{'(stage server)':<39}{sampler.cpu['(stage server)']:>8.1f}")
        print(
            f"{'whole dvc repro':<30}{total:>9.1f}{sum(sampler.cpu.values()):>8.1f}"
            f"{max(peaks.values()) / MIB:>14.0f}"
        )
        low, high = min(loads, default=0), max(loads, default=0)
        print(
            f"largest single process: {max_rss / MIB:.0f} MiB peak RSS; load average during "
            f"the run {low:.1f}-{high:.1f} (now {load_average()})"
        )
        passes_per_photo(pass_log, photos)
        advise_share(times, photos, args.full_photos)
        noop, _ = _seconds(lambda: subprocess.run(
            ["dvc", "repro"], cwd=project, env=env, check=True, capture_output=True
        ))  # fmt: skip
        print(f"a second dvc repro, nothing changed: {noop:.1f} s")
        disk_report(project, env, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


def passes_per_photo(pass_log: Path, photos: int) -> None:
    """Images each network saw over the whole run (``PETS_PASS_LOG``), per photo: 1.0 for a
    frozen backbone means every photo went through it exactly once."""
    from petsml.data.passes import read_log

    seen: dict[str, int] = {}
    for entry in read_log(pass_log) if pass_log.exists() else []:
        seen[entry["network"]] = seen.get(entry["network"], 0) + entry["images"]
    frozen = sum(n for name, n in seen.items() if name.startswith("frozen "))
    print(
        f"forward passes per photo ({photos} photos): frozen backbone {frozen / photos:.2f}"
        + "".join(f"; {name} {n / photos:.2f}" for name, n in sorted(seen.items()))
    )


# Stages whose work does not grow with the photo count (MLflow bookkeeping, one latency probe).
FIXED_STAGES = {"(dvc start)", "params", "compare", "mlflow_store", "track", "register"}


def advise_share(times: list[tuple[str, float]], photos: int, full_photos: int) -> None:
    """The advise stage's share of this run, and estimated at ``full_photos`` photos: the
    stages that read every photo scaled by the photo count, the fixed ones and advise as
    measured (advise reads at most ``advise.max_*_per_class`` photos per class, so the
    estimate holds when this run's classes already fill those caps)."""
    advise = sum(secs for name, secs in times if name == "advise")
    if not advise:
        return
    fixed = sum(secs for name, secs in times if name in FIXED_STAGES)
    scaling = sum(secs for name, secs in times if name not in FIXED_STAGES | {"advise"})
    whole = advise + fixed + scaling
    full = advise + fixed + scaling * full_photos / photos
    print(
        f"advise: {advise:.1f} s of {whole:.1f} s = {advise / whole:.1%} of this run; at "
        f"{full_photos} photos (per-photo stages x {full_photos / photos:.1f}, the others as "
        f"measured) about {advise:.0f} s of {full:.0f} s = {advise / full:.1%}"
    )


def disk_report(project: Path, env: dict[str, str], tmp: Path) -> None:
    """Disk of the workspace and the DVC cache, as run, then relinked to each ``cache.type``."""
    data, cache = project / "data", project / ".dvc" / "cache"
    mlflow = [tmp / "mlflow.db", project / "mlruns"]

    def line(label: str) -> None:
        sizes = [
            disk_bytes(data), disk_bytes(cache), disk_bytes(data, cache), disk_bytes(*mlflow),
            disk_bytes(project, tmp / "mlflow.db"),
        ]  # fmt: skip
        named = zip(("data/", ".dvc/cache", "both", "mlflow", "whole project"), sizes, strict=True)
        print(f"{label:<34} " + "  ".join(f"{k} {v / MIB:>6.0f}" for k, v in named) + " MiB")

    print(
        f"\ndisk (MiB, hard links once): data/raw {disk_bytes(data / 'raw') / MIB:.0f}, "
        f"data/decoded {disk_bytes(data / 'decoded') / MIB:.0f}, data/downloads (the archives, "
        f"kept outside DVC) {disk_bytes(data / 'downloads') / MIB:.0f}"
    )
    line("as run (cache.type default)")
    for kind in ("hardlink", "symlink"):
        subprocess.run(["dvc", "config", "cache.type", kind], cwd=project, env=env, check=True)
        secs, _ = _seconds(lambda: subprocess.run(
            ["dvc", "checkout", "--relink", "--quiet"], cwd=project, env=env, check=True,
            capture_output=True,
        ))  # fmt: skip
        status = subprocess.run(
            ["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True
        )
        changed = set(json.loads(status.stdout or "{}")) - {"mlflow_store"}
        line(f"cache.type {kind} ({secs:.0f} s relink)")
        if changed:
            print(f"  dvc status after relink names {sorted(changed)}")


def _seconds(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _strategies(project: Path) -> list[str]:
    return yaml.safe_load((project / "params.yaml").read_text())["train"]["strategies"]


def _fs_type(path: Path) -> str:
    best = max(
        (p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint)),
        key=lambda p: len(p.mountpoint),
        default=None,
    )
    return f"{best.fstype} on {best.mountpoint}" if best else "filesystem unknown"


if __name__ == "__main__":
    main()
