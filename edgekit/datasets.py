"""Named data sets a model can be evaluated and calibrated on (DATA arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgekit.data import load_fashion_mnist
from edgekit.errors import DataError

if TYPE_CHECKING:
    import torch

    from edgekit.models import ResolvedModel

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


def calibration_inputs(resolved: "ResolvedModel", evalset: EvalSet | None) -> np.ndarray:
    """Representative inputs for int8 calibration: training images (never the test set) when known."""
    if evalset is not None and resolved.dataset == "example:fashion-mnist":
        train = load_fashion_mnist("train", limit=20000)
        pick = np.random.default_rng(0).choice(len(train), CALIBRATION_SAMPLES, replace=False)
        return train.x[np.sort(pick)]
    shape = tuple(resolved.example_inputs[0].shape)
    return np.random.default_rng(0).standard_normal((CALIBRATION_SAMPLES, *shape[1:])).astype(np.float32)
