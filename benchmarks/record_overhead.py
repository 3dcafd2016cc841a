"""What recording costs a served answer: pyfunc ``predict`` latency with and without it.

The model is the project's backbone (params.yaml ``model.backbone``, random init: the same
network, embedding size and decode as the trained one, no download) with a 37-breed head, logged
as the pipeline logs it (:func:`petsml.tracking.pyfunc.log_pyfunc_model`, params.yaml's
``monitor:`` section in its model_config) into a throwaway MLflow store, then loaded twice: once
recording into a fresh SQLite store (WAL, ``monitor.durable`` as in params.yaml), once with
``monitor_overrides: {log: false}``. Each real photo of FOLDER is sent as one base64 row, as a
client sends it, to both in turn (interleaved, so a load change on a shared machine hits both
alike); the first ``--warmup`` photos are not timed. Prints the machine, the precision, and
p50/p95 of each, the per-photo difference, and the time spent in ``Recorder.record`` itself
(hashing, image facts, the SQLite commit): on a loaded machine the whole-predict difference is
mostly noise, the recorder's own time is what recording adds (the embedding comes from the same
forward pass that answers).

    python -m benchmarks.record_overhead [FOLDER] [--photos 80] [--warmup 5] [--backbone NAME]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header
from petsml.testing.project import REPO

DEFAULT_FOLDER = REPO.parent / "shared" / "pets-sample" / "images"


def _model_pt(folder: Path, params, backbone: str, decode_size: int, image_size) -> Path:
    """The project's backbone with a random 37-breed head, saved with the model.pt contract."""
    import torch

    from petsml.data.breeds import BREEDS
    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, save_classifier

    torch.manual_seed(0)
    network = create_backbone(backbone, pretrained=False, image_size=image_size)
    model = Classifier(network, len(BREEDS), feature="penultimate")
    meta = {"strategy": "feature_extractor", "task": "breed", "class_names": list(BREEDS),
            "decode_size": decode_size, "backbone": backbone}  # fmt: skip
    save_classifier(model.eval(), folder / "model.pt", meta)
    return folder / "model.pt"


def _loaded(uri: str, store: Path | None):
    import mlflow.pyfunc

    from petsml.tracking.pyfunc_monitor import OVERRIDES_KEY

    overrides = {"log": False} if store is None else {"log": True, "store": str(store)}
    config = {OVERRIDES_KEY: overrides, "model_name": "oxford-pets-breed", "model_version": "1"}
    return mlflow.pyfunc.load_model(uri, model_config=config)


def main(argv: list[str] | None = None) -> None:
    import mlflow
    import pandas as pd

    from petsml.config import load_params
    from petsml.tracking.pyfunc import log_pyfunc_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--photos", type=int, default=80, help="timed photos (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first photos")
    parser.add_argument("--backbone", help="default: params.yaml model.backbone")
    parser.add_argument("--decode-size", type=int, help="default: params.yaml decode.size")
    parser.add_argument("--image-size", type=int, help="default: params.yaml model.image_size")
    args = parser.parse_args(argv)
    files = sorted(args.folder.glob("*.jpg"))[: args.photos + args.warmup]
    if len(files) <= args.warmup:
        raise SystemExit(f"ERROR: {args.folder} holds too few .jpg photos")
    params = load_params(REPO / "params.yaml")
    backbone = args.backbone or params.model.backbone
    decode_size = args.decode_size or params.decode.size
    image_size = args.image_size or params.model.image_size
    print(header())
    now = datetime.datetime.now(datetime.UTC)
    print(f"date: {now:%Y-%m-%d %H:%M} UTC; precision fp32 NCHW (the pyfunc's); backbone "
          f"{backbone}, decode {decode_size}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pets-record-bench-") as tmp:
        tmp = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        with mlflow.start_run():
            model_pt = _model_pt(tmp, params, backbone, decode_size, image_size)
            info = log_pyfunc_model(model_pt, monitor=params.monitor.model_dump(),
                                    model_name="oxford-pets-breed")  # fmt: skip
        off, on = _loaded(info.model_uri, None), _loaded(info.model_uri, tmp / "p.sqlite")
        times: dict[str, list[float]] = {"off": [], "on": [], "record": []}
        recorder = on.unwrap_python_model().recorder
        record = recorder.record

        def timed_record(*a, **kw):  # the recorder's own share of an answer
            start = time.perf_counter()
            try:
                return record(*a, **kw)
            finally:
                times["record"].append((time.perf_counter() - start) * 1000)

        recorder.record = timed_record
        for i, path in enumerate(files):
            row = pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode()]})
            for name, model in (("off", off), ("on", on)):
                start = time.perf_counter()
                answer = model.predict(row)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
            assert answer["prediction_id"].iloc[0], "the recording model recorded nothing"
    off_ms, on_ms = np.array(times["off"]), np.array(times["on"])
    print(f"{len(off_ms)} photos, one per predict call")
    print("| recording | p50 ms | p95 ms |\n|---|---:|---:|")
    for name, values in (("off", off_ms), ("on", on_ms)):
        print(f"| {name} | {np.percentile(values, 50):.1f} | {np.percentile(values, 95):.1f} |")
    rec = np.array(times["record"][args.warmup :])
    p50, p95 = np.percentile(rec, 50), np.percentile(rec, 95)
    print(f"| Recorder.record alone | {p50:.2f} | {p95:.2f} |")
    added = on_ms - off_ms
    p95_added = np.percentile(on_ms, 95) - np.percentile(off_ms, 95)
    print(
        f"whole predict, added: p95 {p95_added:+.1f} ms; per photo median "
        f"{np.median(added):+.1f} ms, p95 {np.percentile(added, 95):+.1f} ms"
    )


if __name__ == "__main__":
    main()
