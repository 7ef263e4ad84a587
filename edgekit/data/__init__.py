"""Data for calibration, evaluation, parity checks and fine-tuning: one DATA concept.

- ``sources``: ``load_data(ref)`` → :class:`Dataset` (example data, image folders, .npz, .npy,
  factories), its seeded calibration/evaluation split and its description for reports;
- ``preprocess``: the :class:`Preprocess` spec that turns images into a model's inputs;
- ``plan``: which samples calibrate, evaluate and check parity in a run (and the bundled
  example's named evaluation set and calibration inputs);
- ``training``: DATA as training and validation batches for compression (``train_data``);
- ``fashion_mnist``: the bundled example data set (this package was once that one module: its
  names stay importable from ``edgekit.data``).
"""

from edgekit.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_PACKAGE,
    FASHION_MNIST_PREPROCESS,
    FASHION_MNIST_STD,
    Split,
    load_fashion_mnist,
    load_npz_inputs,
    normalize,
)
from edgekit.data.preprocess import PRESETS, Preprocess
from edgekit.data.sources import IMAGE_EXTENSIONS, Dataset, load_data, load_image_folder

__all__ = [
    "Dataset",
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "Preprocess",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_PACKAGE",
    "FASHION_MNIST_PREPROCESS",
    "FASHION_MNIST_STD",
    "Split",
    "load_data",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz_inputs",
    "normalize",
]
