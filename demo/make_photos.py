"""How demo/pets was made (run once; its output is committed): 5 real photos per breed from the
Oxford-IIIT Pet sample (4 of its trainval list, 1 of its test list, JPEGs only), short side
downscaled to 256 px (the pipeline's decode size) at JPEG quality 75, with the annotation lists.

    python demo/make_photos.py [SAMPLE] [--per-breed 5]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo" / "pets"
SHORT_SIDE = 256


def _rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def _is_jpeg(path: Path) -> bool:
    with Image.open(path) as img:
        return img.format == "JPEG" and img.mode == "RGB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sample", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--per-breed", type=int, default=5)
    args = parser.parse_args()
    sample = Path(args.sample)
    picked: dict[str, list[str]] = {"trainval": [], "test": []}
    quota = {"trainval": args.per_breed - 1, "test": 1}
    for split in picked:
        seen: dict[str, int] = {}
        for row in _rows(sample / "annotations" / f"{split}.txt"):
            image_id = row.split()[0]
            breed = image_id.rsplit("_", 1)[0]
            if seen.get(breed, 0) < quota[split] and _is_jpeg(
                sample / "images" / f"{image_id}.jpg"
            ):
                seen[breed] = seen.get(breed, 0) + 1
                picked[split].append(row)
    shutil.rmtree(OUT / "images", ignore_errors=True)
    (OUT / "images").mkdir(parents=True)
    (OUT / "annotations").mkdir(exist_ok=True)
    header = [line for line in (sample / "annotations" / "list.txt").read_text().splitlines()
              if line.startswith("#")]  # fmt: skip
    chosen = {row.split()[0] for rows in picked.values() for row in rows}
    listed = [row for row in _rows(sample / "annotations" / "list.txt") if row.split()[0] in chosen]
    (OUT / "annotations" / "list.txt").write_text("\n".join(header + listed) + "\n")
    for split, rows in picked.items():
        (OUT / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    for image_id in sorted(chosen):
        with Image.open(sample / "images" / f"{image_id}.jpg") as img:
            scale = SHORT_SIDE / min(img.size)
            if scale < 1:
                img = img.resize((round(img.width * scale), round(img.height * scale)),
                                 Image.Resampling.LANCZOS)  # fmt: skip
            img.convert("RGB").save(OUT / "images" / f"{image_id}.jpg", quality=75, optimize=True)
    size = sum(p.stat().st_size for p in (OUT / "images").iterdir())
    print(f"{len(chosen)} photos ({len(picked['test'])} test), {size / 1e6:.1f} MB in {OUT}")


if __name__ == "__main__":
    main()
