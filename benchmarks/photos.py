"""Real photographs for the export benchmark, from Debian's ``opencv-doc`` sample data.

No labelled ImageNet is available offline; OpenCV's documentation ships sample photographs
(fruits, baboon, butterfly, building, squirrel, scene-text photos, stereo pairs, ...). This
module finds them, drops diagrams, plots, logos, grayscale calibration boards and tiny icons,
groups near-duplicates (stereo pairs, ``aloeL``/``aloeR``, ``rubberwhale1``/``2``, ...) so that a
group never lands in both the calibration and the evaluation split, and makes more varied
inputs with random resized crops, flips and scales.

    apt-get install -y --no-install-recommends opencv-doc
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

PHOTO_ROOT = Path("/usr/share/doc/opencv-doc/examples")
INSTALL_HINT = "apt-get install -y --no-install-recommends opencv-doc"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}
# Not photographs (or not natural images): logos, plots, synthetic shapes, the PCA test figure.
EXCLUDE = {"WindowsLogo.jpg", "ml.png", "pic2.png", "pic4.png", "pca_test1.jpg", "sudoku.png"}
MIN_SIDE = 190  # px: skips icons and thumbnails
MIN_COLORS = 1000  # distinct RGB colours in a 64×64 thumbnail: skips flat diagrams
MIN_SATURATION = 6.0  # mean |R-G| + |G-B| in the thumbnail: skips grayscale boards and scans


class PhotosMissing(RuntimeError):
    pass


def group_key(path: Path) -> str:
    """Near-duplicates share a key: the same picture in two folders (``data/butterfly.jpg``,
    ``dnn_superres/butterfly.png``), stereo/sequence pairs differing only in a trailing capital L/R/A/B or
    digits, and the word crops of the scene-text photos."""
    stem = path.stem.lower()
    stripped = re.sub(r"(_?\d+)$", "", stem)
    stem = stripped or f"{path.parent.parent.name}-{path.parent.name}"  # hfs/data/000.jpg
    if re.search(r"[a-z][LRAB]$", path.stem):  # aloeL/aloeR, leuvenA/leuvenB
        stem = stem[:-1]
    stem = re.sub(r"_(segmented_word|word|char)$", "", stem)
    return {"left": "leftright", "right": "leftright", "ela_modified": "ela", "ela_original": "ela"}.get(stem, stem)


def find_photos(root: Path = PHOTO_ROOT) -> list[Path]:
    """Sorted list of the colour photographs under ``root`` (raises PhotosMissing without any)."""
    from PIL import Image

    if not root.is_dir():
        raise PhotosMissing(f"{root} not found: {INSTALL_HINT}")
    found, seen = [], set()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in EXTENSIONS or path.name in EXCLUDE or "html" in path.parts:
            continue
        try:
            with Image.open(path) as im:
                if min(im.size) < MIN_SIDE:
                    continue
                thumb = np.asarray(im.convert("RGB").resize((64, 64)), np.float32)
        except OSError:
            continue
        saturation = np.abs(thumb[..., 0] - thumb[..., 1]).mean() + np.abs(thumb[..., 1] - thumb[..., 2]).mean()
        colours = len(np.unique(thumb.reshape(-1, 3).astype(np.uint8), axis=0))
        if saturation < MIN_SATURATION or colours < MIN_COLORS:
            continue
        digest = hashlib.sha256(thumb.astype(np.uint8).tobytes()).hexdigest()  # same picture in two folders
        if digest in seen:
            continue
        seen.add(digest)
        found.append(path)
    if not found:
        raise PhotosMissing(f"no photographs under {root}: {INSTALL_HINT}")
    return found


def split(paths: list[Path], calibration_every: int = 3) -> tuple[list[Path], list[Path]]:
    """(calibration, evaluation): every ``calibration_every``-th near-duplicate group (sorted by a
    hash of its key, so the split does not follow folder order) goes to calibration."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(group_key(p), []).append(p)
    keys = sorted(groups, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    calib = [p for i, k in enumerate(keys) if i % calibration_every == 0 for p in groups[k]]
    evals = [p for i, k in enumerate(keys) if i % calibration_every != 0 for p in groups[k]]
    return calib, evals


def crops(path: Path, n: int, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """``n`` RGB crops in [0, 1], n×3×size×size: the first is the usual center crop (short side
    resized to size/0.875), the others random resized crops (8–100 % of the area, aspect
    3/4–4/3) with a random horizontal flip."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
    w, h = im.size
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        if i == 0:
            side = min(w, h) * 0.875
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            flip = False
        else:
            for _ in range(20):
                area = w * h * rng.uniform(0.08, 1.0)
                aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
                cw, ch = np.sqrt(area * aspect), np.sqrt(area / aspect)
                if cw <= w and ch <= h:
                    break
            else:
                cw = ch = min(w, h)
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            box = (x0, y0, x0 + cw, y0 + ch)
            flip = bool(rng.integers(2))
        img = im.resize((size, size), Image.BILINEAR, box=box)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return out


def photo_set(paths: list[Path], per_photo: int, seed: int, size: int = 224) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([crops(p, per_photo, rng, size) for p in paths])


if __name__ == "__main__":
    photos = find_photos()
    calib, evals = split(photos)
    print(f"{len(photos)} photos, {len({group_key(p) for p in photos})} groups: "
          f"{len(calib)} calibration, {len(evals)} evaluation")
    for p in photos:
        print(("C " if p in calib else "E ") + group_key(p).ljust(32), p.relative_to(PHOTO_ROOT))
