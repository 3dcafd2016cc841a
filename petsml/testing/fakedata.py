"""Small Oxford-IIIT-Pet-shaped datasets and a loopback mirror for tests.

The archives follow the official layout (``images/<Id>.jpg``; ``annotations/list.txt`` with its
``#`` header, ``trainval.txt``, ``test.txt``) and plant the real dataset's quirks: a PNG and a GIF
behind ``.jpg``, CMYK, greyscale and RGBA files, plus undecodable files that validation must
quarantine. Classes differ visibly (hue and stripe direction), so a classifier can learn them.
"""

from __future__ import annotations

import colorsys
import hashlib
import http.server
import io
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from petsml.data.breeds import BREEDS, CLASS_ID, SPECIES, breed_of, species_of

# Two cats and two dogs by default: both species, both capitalisation rules.
DEFAULT_BREEDS = ("Abyssinian", "Bengal", "beagle", "pug")


@dataclass
class FakeDataset:
    root: Path  # holds images/ and annotations/
    breeds: tuple[str, ...]
    ids: list[str]  # every listed image id
    trainval: list[str]
    test: list[str]
    undecodable: list[str] = field(default_factory=list)  # file names (with extension)
    stray: list[str] = field(default_factory=list)  # non-image files in images/
    converted: dict[str, str] = field(
        default_factory=dict
    )  # image id -> quirk (png, gif, cmyk, ...)
    unlisted: list[str] = field(default_factory=list)  # on disk, not in list.txt
    missing: list[str] = field(default_factory=list)  # in list.txt, no file


def class_image(class_index: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """An RGB image whose hue and stripe direction encode the class, with noise and jitter."""
    width, height = size
    hue = (class_index * 0.61803) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.9)) * 255
    yy, xx = np.mgrid[0:height, 0:width]
    angle = (class_index % 4) * np.pi / 4 + rng.normal(0, 0.1)
    period = 6 + (class_index % 3) * 3
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)
    img = base[None, None, :] * (0.65 + 0.35 * stripes[..., None])
    img += rng.normal(0, 18, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _save_jpeg(img: Image.Image, path: Path) -> None:
    img.save(path, format="JPEG", quality=90)


def make_dataset(
    root: Path,
    breeds: tuple[str, ...] = DEFAULT_BREEDS,
    per_breed: int = 8,
    test_per_breed: int = 3,
    size: tuple[int, int] = (72, 56),
    quirks: bool = True,
    seed: int = 0,
) -> FakeDataset:
    """Write a dataset in the official extracted layout under ``root``."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    annotations = root / "annotations"
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    ds = FakeDataset(root=root, breeds=breeds, ids=[], trainval=[], test=[])
    species_count = {"cat": 0, "dog": 0}
    breed_id: dict[str, int] = {}
    for breed in sorted(breeds, key=lambda b: CLASS_ID[b]):
        sp = species_of(breed)
        species_count[sp] += 1
        breed_id[breed] = species_count[sp]
        for number in range(1, per_breed + 1):
            image_id = f"{breed}_{number}"
            w = size[0] + int(rng.integers(-4, 5))
            h = size[1] + int(rng.integers(-4, 5))
            _save_jpeg(class_image(CLASS_ID[breed], rng, (w, h)), images / f"{image_id}.jpg")
            ds.ids.append(image_id)
            (ds.test if number > per_breed - test_per_breed else ds.trainval).append(image_id)
    if quirks:
        _plant_quirks(ds, rng, size)
    header = [
        "#Image CLASS-ID SPECIES BREED ID",
        "#ID: 1:37 Class ids",
        "#SPECIES: 1:Cat 2:Dog",
        "#BREED ID: 1-25:Cat 1:12:Dog",
        "#All images with 1st letter as captial are cat images",
        "#images with small first letter are dog images",
    ]

    def line(image_id: str) -> str:
        breed = image_id.rsplit("_", 1)[0]
        sp = 1 if species_of(breed) == "cat" else 2
        return f"{image_id} {CLASS_ID[breed] + 1} {sp} {breed_id[breed]}"

    (annotations / "list.txt").write_text("\n".join(header + [line(i) for i in ds.ids]) + "\n")
    (annotations / "trainval.txt").write_text("".join(line(i) + "\n" for i in ds.trainval))
    (annotations / "test.txt").write_text("".join(line(i) + "\n" for i in ds.test))
    (annotations / "README").write_text("Fake Oxford-IIIT Pet annotations for tests.\n")
    return ds


def _plant_quirks(ds: FakeDataset, rng: np.random.Generator, size: tuple[int, int]) -> None:
    images = ds.root / "images"
    trainval_ids = [i for i in ds.trainval]
    # Decodable files in another format or mode: kept, converted to RGB when loaded.
    formats = ["png_rgba", "gif", "cmyk", "grey"]
    for quirk, image_id in zip(
        formats, trainval_ids[:: max(1, len(trainval_ids) // 6)], strict=False
    ):
        cls = CLASS_ID[image_id.rsplit("_", 1)[0]]
        img = class_image(cls, rng, size)
        path = images / f"{image_id}.jpg"
        if quirk == "png_rgba":
            img.convert("RGBA").save(path, format="PNG")
        elif quirk == "gif":
            img.convert("P", palette=Image.Palette.ADAPTIVE).save(path, format="GIF")
        elif quirk == "cmyk":
            img.convert("CMYK").save(path, format="JPEG")
        elif quirk == "grey":
            img.convert("L").save(path, format="JPEG")
        ds.converted[image_id] = quirk
    # Undecodable: a truncated JPEG and random bytes, both listed in list.txt.
    victims = [i for i in trainval_ids if i not in ds.converted][-2:]
    truncated = images / f"{victims[0]}.jpg"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (images / f"{victims[1]}.jpg").write_bytes(rng.bytes(500))
    ds.undecodable += [f"{victims[0]}.jpg", f"{victims[1]}.jpg"]
    # A stray non-image file, as the official archive ships a few .mat files in images/.
    (images / "Abyssinian_100.mat").write_bytes(b"MATLAB 5.0 MAT-file" + rng.bytes(64))
    ds.stray.append("Abyssinian_100.mat")
    # A photo on disk that list.txt does not name, and a listed id with no file.
    breed = ds.breeds[0]
    _save_jpeg(class_image(CLASS_ID[breed], rng, size), images / f"{breed}_999.jpg")
    ds.unlisted.append(f"{breed}_999")
    missing = [i for i in ds.test if i not in ds.converted][-1]
    (images / f"{missing}.jpg").unlink()
    ds.missing.append(missing)


def pack_archives(
    ds_root: Path, out_dir: Path, extra_members: dict[str, bytes] | None = None
) -> dict[str, str]:
    """Pack ``images/`` and ``annotations/`` as the official tarballs; returns their md5 sums.

    ``extra_members`` adds raw members to images.tar.gz (for example ``../evil.txt``) to test
    that extraction refuses them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for name in ("images", "annotations"):
        target = out_dir / f"{name}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(ds_root / name, arcname=name)
            if name == "images":
                for member, payload in (extra_members or {}).items():
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        md5[name] = hashlib.md5(target.read_bytes()).hexdigest()
    return md5


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from ``server.root`` with Range support and injectable faults."""

    server: MirrorServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if srv.fail_first > 0:
            srv.fail_first -= 1
            self.send_error(503, "mirror busy")
            return
        path = srv.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and srv.ranges:
            start = int(rng[6:].split("-")[0] or 0)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        if path.name in srv.content_types:
            self.send_header("Content-Type", srv.content_types[path.name])
        self.end_headers()
        cut = srv.cut_after.pop(path.name, None)
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-transfer
            return
        self.wfile.write(body)


class MirrorServer(http.server.ThreadingHTTPServer):
    """A loopback HTTP mirror: ``with MirrorServer(folder) as m: m.url``."""

    daemon_threads = True

    def __init__(
        self,
        root: Path,
        fail_first: int = 0,
        ranges: bool = True,
        cut_after: dict[str, int] | None = None,
        content_types: dict[str, str] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.content_types = dict(content_types or {})  # file name -> Content-Type header
        self.root = Path(root)
        self.fail_first = fail_first
        self.ranges = ranges
        self.cut_after = dict(cut_after or {})
        self.requests: list[tuple[str, str | None]] = []
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> MirrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


__all__ = ["BREEDS", "FakeDataset", "MirrorServer", "class_image", "make_dataset", "pack_archives"]


def split_rows(ds: FakeDataset) -> list[dict]:
    """One split-CSV row per listed image of ``ds`` (the columns the split stage writes)."""
    return rows_for_ids(ds.ids, ds.root)


def rows_for_ids(image_ids, root: Path) -> list[dict]:
    """Split-CSV rows of ``image_ids``, files at ``root/images/<id>.jpg`` (official layout)."""
    rows = []
    for image_id in image_ids:
        breed = breed_of(image_id)
        file = f"images/{image_id}.jpg"
        rows.append(
            {
                "image_id": image_id,
                "file": file,
                "breed": breed,
                "class_id": CLASS_ID[breed],
                "species": species_of(breed),
                "species_id": SPECIES.index(species_of(breed)),
                "sha256": hashlib.sha256((root / file).read_bytes()).hexdigest(),
            }
        )
    return rows


def make_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("circle", "square", "zebra"),
    per_class: int = 8,
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
    start: int = 0,
) -> list[Path]:
    """Write ``<root>/<class>/<n>.jpg`` photos (learnable: hue and stripes per class), numbered
    from ``start`` so a second call adds new photos; returns the files written."""
    rng = np.random.default_rng([seed, start])
    written = []
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(start, start + per_class):
            path = root / name / f"{number:03d}.jpg"
            _save_jpeg(class_image(index, rng, size), path)
            written.append(path)
    return written
