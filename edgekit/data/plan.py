"""Which samples calibrate, which evaluate and which check parity: the DATA a run was given, split
so that no sample serves both calibration and evaluation.

Rules (stated in every report through :meth:`DataPlan.describe`):

- ``--calibration`` and ``--eval`` name the same DATA: it is loaded once and split with a seed,
  ``CALIBRATION_SAMPLES`` (or a quarter, when that leaves too few) for calibration, the rest for
  evaluation. The bundled example data has its own train/test parts and is not split.
- Only ``--eval``: calibration comes from the model's own training data when it has one (the
  example model), never from the evaluation samples.
- Only ``--calibration``: no evaluation unless the model brings its own (the example's test set).
- Parity runs on the first evaluation samples, else the first calibration samples, else seeded
  random inputs — the report says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from edgekit.data.fashion_mnist import load_fashion_mnist
from edgekit.data.preprocess import Preprocess
from edgekit.data.sources import Dataset, load_data
from edgekit.errors import DataError

if TYPE_CHECKING:
    import torch

CALIBRATION_SAMPLES = 256
EXAMPLE_CALIBRATION_POOL = 20000  # the example calibrates on a seeded choice from its first 20k training images
PARITY_SAMPLES = 64


@dataclass
class DataPlan:
    """The data of one run; any part may be missing."""

    calibration: Dataset | None = None
    evaluation: Dataset | None = None
    preprocess: Preprocess | None = None
    notes: list[str] = field(default_factory=list)

    def parity_set(self, n: int = PARITY_SAMPLES) -> Dataset | None:
        """The samples parity runs on: real data when there is any."""
        if self.evaluation is not None:
            return self.evaluation.head(n)
        if self.calibration is not None:
            return self.calibration.head(n)
        return None

    def parity_description(self, n: int = PARITY_SAMPLES) -> str:
        parity = self.parity_set(n)
        if parity is None:
            return f"{n} seeded random inputs (no data given)"
        part = "evaluation" if self.evaluation is not None else "calibration"
        return f"the first {len(parity):,} {part} samples"

    def describe(self) -> dict[str, Any]:
        """What a report and a manifest record about the data (JSON-ready)."""
        parity = self.parity_set()
        return {
            "calibration": self.calibration.description() if self.calibration is not None else None,
            "calibration_samples": len(self.calibration) if self.calibration is not None else 0,
            "evaluation": self.evaluation.description() if self.evaluation is not None else None,
            "evaluation_samples": len(self.evaluation) if self.evaluation is not None else 0,
            "parity": self.parity_description(),
            "preprocess": self.preprocess.to_manifest() if self.preprocess is not None else None,
            "notes": list(self.notes),
        }


def plan_data(*, calibration: str | None, evaluation: str | None, own_data: str | None,
              input_names: Sequence[str] | None, input_shapes: Mapping[str, Sequence[Any]] | None,
              preprocess: Preprocess | None = None, eval_limit: int | None = None,
              need_calibration: bool = True, seed: int = 0) -> DataPlan:
    """Load the run's data. ``own_data`` is the model's own data set (``example:fashion-mnist``
    for the example model), used where the user gave none; ``need_calibration`` False skips
    loading calibration samples nobody will use (fp32, fp16, a file deployed as is)."""
    load = _Loader(input_names, input_shapes, preprocess)
    plan = DataPlan(preprocess=preprocess)
    if calibration is not None and calibration == evaluation and not calibration.startswith("example:"):
        data = load(calibration, split="test")
        plan.calibration, plan.evaluation = data.split(_calibration_count(len(data)), seed=seed)
        plan.notes.append(f"--calibration and --eval are the same data: {plan.evaluation.notes[-1]}")
        if eval_limit is not None:
            plan.evaluation = plan.evaluation.head(eval_limit)
        return _with_preprocess(plan)
    cal_ref = calibration or own_data
    if need_calibration and cal_ref is not None:
        plan.calibration = _calibration_samples(load(cal_ref, split="train"), seed)
        if calibration is None:
            plan.notes.append(f"calibration: the model's own training data ({own_data})")
    eval_ref = evaluation or own_data
    if eval_ref is not None:
        plan.evaluation = load(eval_ref, split="test", limit=eval_limit)
    return _with_preprocess(plan)


def _with_preprocess(plan: DataPlan) -> DataPlan:
    if plan.preprocess is None:
        for part in (plan.evaluation, plan.calibration):
            if part is not None and part.preprocess is not None:
                plan.preprocess = part.preprocess
                break
    return plan


def _calibration_count(total: int) -> int:
    """256 samples, or a quarter of a small data set (at least one left for evaluation)."""
    if total < 2:
        return 1  # Dataset.split refuses with a clear message
    return max(1, min(CALIBRATION_SAMPLES, total // 4))


def _calibration_samples(data: Dataset, seed: int) -> Dataset:
    """At most CALIBRATION_SAMPLES, a seeded choice (the example's: from its first 20k images)."""
    pool = min(len(data), EXAMPLE_CALIBRATION_POOL if data.source.startswith("example:") else len(data))
    if pool <= CALIBRATION_SAMPLES:
        return data
    pick = np.sort(np.random.default_rng(seed).choice(pool, CALIBRATION_SAMPLES, replace=False))
    return data.take(pick, note=f"{CALIBRATION_SAMPLES} chosen with seed {seed}")


class _Loader:
    def __init__(self, names: Sequence[str] | None, shapes: Mapping[str, Sequence[Any]] | None,
                 preprocess: Preprocess | None) -> None:
        self.names, self.shapes, self.preprocess = names, shapes, preprocess
        self._cache: dict[tuple[str, str, int | None], Dataset] = {}

    def __call__(self, ref: str, *, split: str, limit: int | None = None) -> Dataset:
        key = (ref, split, limit)
        if key not in self._cache:
            self._cache[key] = load_data(ref, input_names=self.names, input_shapes=self.shapes,
                                         preprocess=self.preprocess, limit=limit, split=split)
        return self._cache[key]


# --- the bundled example's named sets (``eval_set``, ``calibration_inputs``) ----------------------

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
    """The test split of a named data set (``DATASETS``)."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}", f"known: {', '.join(DATASETS)}")
    split = load_fashion_mnist("test", limit=limit)
    return EvalSet(DATASETS[name], split.x, split.y)


def calibration_inputs(example_inputs: Sequence[Any], dataset: str | None) -> np.ndarray:
    """The bundled data set's calibration inputs: training images, never the test set (the same
    samples a DataPlan calibrates on). There is no fallback: edgekit never calibrates on noise."""
    if dataset is None:
        raise DataError("int8 calibration needs data", "pass --calibration DATA (100-500 representative samples)")
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}", f"known: {', '.join(DATASETS)}, or an .npz of inputs")
    train = load_fashion_mnist("train", limit=EXAMPLE_CALIBRATION_POOL)
    pick = np.random.default_rng(0).choice(len(train), CALIBRATION_SAMPLES, replace=False)
    return train.x[np.sort(pick)]
