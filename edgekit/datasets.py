"""Named data sets a model can be evaluated and calibrated on (DATA arguments)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgekit.data import load_fashion_mnist
from edgekit.errors import DataError

if TYPE_CHECKING:
    import torch

CALIBRATION_SAMPLES = 256
DATASETS = {"example:fashion-mnist": "Fashion-MNIST test"}


@dataclass
class EvalSet:
    name: str  # human name for reports: "Fashion-MNIST test"
    x: np.ndarray
    y: np.ndarray

    def reference_accuracy(self, module: "torch.nn.Module | None", batch: int = 1000) -> float | None:
        """Accuracy of the float torch model on the same images (None for a file deployed as is)."""
        if module is None:
            return None
        import torch

        correct = 0
        with torch.no_grad():
            for i in range(0, len(self.y), batch):
                logits = module(torch.from_numpy(self.x[i : i + batch]))
                correct += int((logits.argmax(1).numpy() == self.y[i : i + batch]).sum())
        return correct / len(self.y)


def eval_set(name: str, limit: int | None = None) -> EvalSet:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}", f"known: {', '.join(DATASETS)}")
    split = load_fashion_mnist("test", limit=limit)
    return EvalSet(DATASETS[name], split.x, split.y)


def calibration_inputs(example_inputs: Sequence[Any], dataset: str | None) -> np.ndarray:
    """Representative inputs for int8 calibration: training images (never the test set) when the
    data set is known, else seeded random normal inputs of the example's shape."""
    if dataset is not None:
        if dataset not in DATASETS:
            raise DataError(f"unknown data set {dataset!r}", f"known: {', '.join(DATASETS)}, or an .npz of inputs")
        train = load_fashion_mnist("train", limit=20000)
        pick = np.random.default_rng(0).choice(len(train), CALIBRATION_SAMPLES, replace=False)
        return train.x[np.sort(pick)]
    shape = tuple(example_inputs[0].shape)
    return np.random.default_rng(0).standard_normal((CALIBRATION_SAMPLES, *shape[1:])).astype(np.float32)


# --- training data (DATA for `edgekit compress` and recipes) ------------------------------------

TRAIN_DATASETS = {"example:fashion-mnist": "Fashion-MNIST train (last 5,000 images held out for validation)"}
FASHION_MNIST_VAL_SIZE = 5000


class ArrayLoader:
    """Batches of ``(inputs, targets)`` tensors from two numpy arrays; re-iterable once per epoch.

    ``shuffle`` draws a new order every epoch from ``seed``; ``shift_pixels`` rolls each batch by up
    to that many pixels (the augmentation the example model was trained with).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int = 128, shuffle: bool = False,
                 shift_pixels: int = 0, seed: int = 0) -> None:
        if len(x) != len(y):
            raise DataError(f"inputs and targets differ in length ({len(x)} vs {len(y)})", "pass matching arrays")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1 (got {batch_size})", "use e.g. 128")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shift_pixels = shift_pixels
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):  # noqa: ANN204 - yields (torch.Tensor, torch.Tensor)
        import torch

        order = self._rng.permutation(len(self.y)) if self.shuffle else np.arange(len(self.y))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.shuffle:
                idx = np.sort(idx)  # contiguous reads; the order within a batch does not matter
            xb = torch.from_numpy(self.x[idx])
            if self.shift_pixels:
                dy, dx = (int(v) for v in self._rng.integers(-self.shift_pixels, self.shift_pixels + 1, size=2))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            yield xb, torch.from_numpy(self.y[idx])


@dataclass
class TrainData:
    """What fine-tuning, distillation and calibration take: a training and a validation iterable.

    Each is re-iterable and yields ``(inputs, targets)`` batches of tensors. Validation data
    measures accuracy during compression (early stopping, step reports) and calibrates; keep the
    test set for the final figures.
    """

    name: str
    train: Any
    val: Any


def train_data(ref: "str | TrainData", *, batch_size: int = 128, limit: int | None = None,
               val_limit: int | None = None, seed: int = 0) -> TrainData:
    """Resolve a DATA reference for training: ``example:fashion-mnist`` or a factory ``pkg.module:fn``.

    A factory takes no arguments and returns ``(train_loader, val_loader)``. ``limit`` and
    ``val_limit`` cut the bundled data set (for quick runs and tests).
    """
    if isinstance(ref, TrainData):
        return ref
    if ref == "example:fashion-mnist":
        full = load_fashion_mnist("train")
        cut = len(full) - FASHION_MNIST_VAL_SIZE
        tx, ty = full.x[:cut], full.y[:cut]
        vx, vy = full.x[cut:], full.y[cut:]
        if limit is not None:
            tx, ty = tx[:limit], ty[:limit]
        if val_limit is not None:
            vx, vy = vx[:val_limit], vy[:val_limit]
        return TrainData(
            TRAIN_DATASETS[ref],
            ArrayLoader(tx, ty, batch_size=batch_size, shuffle=True, shift_pixels=2, seed=seed),
            ArrayLoader(vx, vy, batch_size=1000),
        )
    if _FACTORY_REF.match(ref or ""):
        return _train_data_from_factory(ref)
    raise DataError(f"unknown training data {ref!r}",
                    f"use {', '.join(TRAIN_DATASETS)} or a factory pkg.module:fn returning (train_loader, val_loader)")


_FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _train_data_from_factory(ref: str) -> TrainData:
    module_name, fn_name = ref.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), fn_name)
    except ImportError as exc:
        raise DataError(f"cannot import {module_name}: {exc}", "check PYTHONPATH and the module name") from None
    except AttributeError:
        raise DataError(f"{module_name} has no attribute {fn_name!r}",
                        "name a function returning (train_loader, val_loader)") from None
    loaders = factory()
    if not isinstance(loaders, (tuple, list)) or len(loaders) != 2:
        raise DataError(f"{ref} returned {type(loaders).__name__}, not (train_loader, val_loader)",
                        "return a pair of iterables of (inputs, targets) batches")
    train, val = loaders
    for role, loader in (("train", train), ("val", val)):
        if not hasattr(loader, "__iter__"):
            raise DataError(f"{ref}: the {role} loader is not iterable", "return e.g. torch DataLoaders")
    return TrainData(ref, train, val)
