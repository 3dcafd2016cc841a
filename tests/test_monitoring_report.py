"""Recording real photos through a real (tiny) classifier, one monitoring run end to end into
its JSON and offline HTML report, and the feedback photo export into the folder layout.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petsml.data.decode import load_rgb
from petsml.data.folder import class_folders
from petsml.models.classifier import load_classifier
from petsml.monitoring.export import export_feedback_photos
from petsml.monitoring.monitor import run_monitor
from petsml.monitoring.record import ModelRef, image_facts, make_record
from petsml.monitoring.recorder import Recorder
from petsml.monitoring.reference import classifier_outputs
from petsml.monitoring.store import open_store
from petsml.testing.fakedata import make_dataset
from tests.models import DECODE_SIZE, sample_photo, write_jpeg
from tests.monitoring import CLASSES, MODEL, Traffic, records, settings_with

REPO = Path(__file__).resolve().parents[1]

# the benchmark's toy run is half of it
pytestmark = [pytest.mark.slow(seconds=45), pytest.mark.integration]


def _jpeg(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_image_facts_read_the_header_and_see_grey_photos_in_colour_files():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    grey_levels = rng.integers(0, 255, (60, 80), dtype=np.uint8)
    grey_rgb = np.repeat(grey_levels[:, :, None], 3, axis=2)
    facts = image_facts(_jpeg(colour), load_rgb(io.BytesIO(_jpeg(colour)), 40))
    assert (facts.width, facts.height, facts.format, facts.mode) == (80, 60, "JPEG", "RGB")
    assert not facts.greyscale and len(facts.sha256) == 64
    as_rgb = _jpeg(grey_rgb)  # a grey photo saved as a colour JPEG
    assert image_facts(as_rgb, load_rgb(io.BytesIO(as_rgb), 40)).greyscale
    assert image_facts(_jpeg(grey_levels, "L")).greyscale  # the mode alone says so
    png = io.BytesIO()
    Image.fromarray(colour).save(png, format="PNG")
    assert image_facts(png.getvalue()).format == "PNG"


def test_a_served_prediction_is_recorded_without_its_photo_unless_kept(tiny_model, tmp_path):
    model, spec = load_classifier(tiny_model)
    data = sample_photo(tmp_path).read_bytes()
    decoded = load_rgb(io.BytesIO(data), int(spec["decode_size"]))
    probs, embeddings = classifier_outputs(model, decoded[None])
    assert probs.shape == (1, len(spec["class_names"])) and embeddings.shape[0] == 1
    served = ModelRef("oxford-pets-breed", "1", "champion")
    for keep in (False, True):
        settings = settings_with(store=str(tmp_path / f"keep-{keep}.sqlite"), keep_photos=keep)
        recorder = Recorder.open(settings, served, spec["class_names"], source="serve")
        assert recorder is not None
        prediction_id = recorder.record(probs[0], data, embeddings[0], decoded)
        assert prediction_id is not None and recorder.failures == 0
        window = recorder.store.window(served)
        assert window.ids.tolist() == [prediction_id]
        np.testing.assert_allclose(window.sample.embeddings[0], embeddings[0], rtol=1e-2, atol=1e-3)
        assert recorder.store.photo(prediction_id) == (data if keep else None)
        recorder.close()
    assert Recorder.open(settings_with(log=False), served, spec["class_names"]) is None


def test_recording_never_fails_the_answer(tmp_path):
    settings = settings_with(store=str(tmp_path / "p.sqlite"))
    recorder = Recorder.open(settings, MODEL, CLASSES)
    assert recorder is not None
    photo = write_jpeg(tmp_path / "pet.jpg").read_bytes()
    assert recorder.record(np.ones(3) / 3, photo) is None  # 3 probabilities for 12 classes
    assert recorder.record(np.full(12, 1 / 12), b"not an image") is None
    assert recorder.failures == 2 and recorder.store.count() == 0
    assert recorder.record(np.full(12, 1 / 12), photo) is not None


def test_a_monitoring_run_writes_json_offline_html_and_a_verdict_line(tmp_path):
    traffic = Traffic(0)
    reference = traffic.reference()
    settings = settings_with(store=str(tmp_path / "p.sqlite"), reports=str(tmp_path / "r"),
                               permutations=200, window=100)  # fmt: skip
    with open_store(settings.store, settings) as store:
        calm = records(traffic.draw(100, seed=20))
        store.append_many(calm)
        for record in calm[:10]:
            store.add_feedback(record.id, record.label, "web")
        quiet = run_monitor(store, reference, settings)
        store.append_many(records(traffic.draw(100, seed=21, classes=(0, 1)), start=1.9e9))
        loud = run_monitor(store, reference, settings, name="after-the-shift")
    assert not quiet.drift and quiet.line.startswith("OK oxford-pets-breed v3")
    assert loud.drift and loud.line.startswith("DRIFT") and "prediction p=" in loud.line
    assert loud.files.json.name == "after-the-shift.json"
    data = json.loads(quiet.files.json.read_text())
    assert data["verdict"] == "ok" and data["drift"]["n"] == 100
    assert data["accuracy_on_feedback"][0]["n"] == 10
    assert {d["name"] for d in data["drift"]["detectors"]} == {
        "input", "prediction", "confidence", "image",
    }  # fmt: skip
    page = loud.files.html.read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page fetches something"
    assert "<script" not in page and loud.line in page.replace("&#x27;", "'")


def test_feedback_photos_export_into_the_folder_layout(tmp_path):
    settings = settings_with(keep_photos=True)
    photos = [write_jpeg(tmp_path / f"in{i}.jpg", class_index=i, seed=i).read_bytes()
              for i in range(4)]  # fmt: skip
    draw = Traffic(0).draw(4, seed=30)
    kept = [
        make_record(p, CLASSES, image_facts(photo), model=MODEL, photo=photo)
        for p, photo in zip(draw.probabilities, photos, strict=True)
    ]
    unkept = make_record(draw.probabilities[0], CLASSES, image_facts(photos[0]), model=MODEL)
    with open_store(tmp_path / "p.sqlite", settings) as store:
        store.append_many([*kept, unkept])
        store.add_feedback(kept[0].id, "class_03")
        store.add_feedback(kept[1].id, "class_03")
        store.add_feedback(kept[2].id, "class_07")
        store.add_feedback(kept[3].id, "../outside")  # never a path
        store.add_feedback(unkept.id, "class_01")  # no photo kept: nothing to export
        folder = tmp_path / "feedback"
        first = export_feedback_photos(store, folder, classes=CLASSES)
        again = export_feedback_photos(store, folder, classes=CLASSES)
    assert len(first.written) == 3 and list(first.refused) == [kept[3].id]
    assert (len(again.written), again.already_there) == (0, 3)
    assert class_folders(folder) == ["class_03", "class_07"]  # what data.source: folder reads
    for record, label in zip(kept[:3], ["class_03", "class_03", "class_07"], strict=True):
        target = folder / label / f"{record.image.sha256[:16]}.jpg"
        assert target.read_bytes() == record.photo
    assert not (tmp_path / "outside").exists()


def test_classifier_outputs_match_the_models_own_forward(tiny_model, tmp_path):
    import torch

    from petsml.data.tensors import to_input

    model, _ = load_classifier(tiny_model)
    images = np.stack([load_rgb(write_jpeg(tmp_path / f"{i}.jpg", seed=i), DECODE_SIZE)
                       for i in range(3)])  # fmt: skip
    probs, _ = classifier_outputs(model, images, batch_size=2)
    prep = model.backbone.preprocessing
    x = to_input(torch.from_numpy(images), list(prep.mean), list(prep.std), size=prep.input_size)
    with torch.inference_mode():
        expected = torch.softmax(model(x.float()), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_the_monitor_benchmark_prints_machine_table_and_latency(tmp_path):
    """benchmarks/monitor.py end to end at toy size (tiny random network, generated photos)."""
    ds = make_dataset(tmp_path / "photos", per_breed=6, test_per_breed=0, quirks=False)
    cmd = [
        sys.executable, "-m", "benchmarks.monitor", str(ds.root),
        "--backbone", "test_efficientnet", "--random-init", "--image-size", "32",
        "--decode-size", "40", "--train", "2", "--val", "2", "--shifted", "2", "--trials", "2",
        "--windows", "20", "60", "--permutations", "50", "--record-calls", "30",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"^machine: cpu '.+', flags \[.*\], \d+ cores", text, re.M)
    assert re.search(r"^date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text, re.M)
    row = r"^\| (no drift[^|]*|shift: [^|]+|label shift[^|]+) \| (\d+) \| (with|without) "
    rows = re.findall(row + r"replacement \| (\d+) \| (\d+)/2 \|", text, re.M)
    assert len(rows) == 7 * 2, text
    assert {(r[0].split(" (")[0], r[1]) for r in rows if r[0].startswith("no drift")} == {
        ("no drift", "20"), ("no drift", "60"),
    }  # fmt: skip
    assert len(re.findall(r"^record: p50 [\d.]+ ms, p95 [\d.]+ ms", text, re.M)) == 2


def test_the_recorder_loads_without_the_detectors_heavy_libraries():
    """What a serving process imports to record: no scipy, scikit-learn or matplotlib."""
    code = (
        "import sys\nfrom petsml.monitoring.recorder import Recorder\n"
        "from petsml.monitoring import ModelRef, MonitorSettings\n"
        "print(sorted(m for m in ('scipy', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
