"""Real data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, and ``.npz`` inputs."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.data.preprocess import Preprocess
from edgekit.errors import DataError

FASHION_MNIST_DIR = Path(os.environ.get("EDGEKIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# What the example model was trained with, for images from elsewhere (an image folder, a photo):
# a 28×28 PNG of a Fashion-MNIST image maps to exactly the array load_fashion_mnist gives.
FASHION_MNIST_PREPROCESS = Preprocess(
    grayscale=True, resize=(28, 28), mean=(FASHION_MNIST_MEAN,), std=(FASHION_MNIST_STD,)
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass
class Split:
    """Inputs (float32, N×1×28×28, normalized) and integer labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int) -> "Split":
        return Split(self.x[:n], self.y[:n])


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(split: str = "test", limit: int | None = None) -> Split:
    """Load a Fashion-MNIST split ("train" or "test"), normalized like the example model's training."""
    if split not in _FILES:
        raise DataError(f"unknown Fashion-MNIST split {split!r}", "use 'train' or 'test'")
    images_file, labels_file = (FASHION_MNIST_DIR / name for name in _FILES[split])
    if not images_file.exists() or not labels_file.exists():
        raise DataError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}",
            f"install it with: apt-get install {FASHION_MNIST_PACKAGE}",
        )
    images = _read_idx(images_file, 16).reshape(-1, 1, 28, 28)
    labels = _read_idx(labels_file, 8).astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Split(normalize(images), labels)


def normalize(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images to the example model's inputs: ``(p / 255 - mean) / std`` in float32."""
    return ((images_uint8.astype(np.float32) / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD).astype(
        np.float32
    )


def load_npz_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` by name, without pickle."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"inputs file not found: {path}", "pass an existing .npz with one array per input name")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot read {path} as .npz: not an .npz archive", "save inputs with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError) as exc:
        # numpy's text advises allow_pickle=True: input files are never unpickled here
        what = "it holds object arrays (pickled data)" if "pickle" in str(exc) else str(exc)
        raise DataError(f"cannot read {path} as .npz: {what}", "save numeric arrays with numpy.savez") from exc
