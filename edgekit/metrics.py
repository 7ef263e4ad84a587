"""Task metrics on a model's outputs (numpy), chosen by ``--metric NAME`` or inferred.

Four metrics, registered by name in ``METRICS``:

- ``classification``: top-1 (and top-5 when there are more than 5 classes) against integer labels;
- ``agreement``: top-1 agreement with the reference (float) model's outputs; no labels needed;
- ``embedding``: mean cosine similarity to the reference outputs, per sample (and the lowest);
- ``regression``: MSE, max |Δ| and relative error (‖Δ‖₂ / ‖target‖₂) against targets: the labels
  when they have the outputs' shape, else the reference outputs.

``evaluate`` computes a metric for an artifact and, where it means something, the float model's
figure on the same samples (label-based metrics); a reference-based metric would trivially give
the float model 1.0 or 0, so only the artifact's figure is reported.

Inference rules (``infer_metric``), with the per-sample output shape being the output shape
without its batch dimension:

1. labels shaped like the outputs (more than one value per sample) → ``regression`` against them;
2. integer labels, one per sample, and a per-sample output of C > 1 values (``(N, C)``, or
   ``(N, C, 1, 1)`` from a 1×1-conv head) → ``classification``;
3. no labels and ``(N, C)`` with C > 1 → ``agreement`` (logits are the common case; pass
   ``--metric embedding`` for an embedding model);
4. no labels and ``(N, C, 1, 1)`` → ``embedding``: a globally pooled feature map, not class scores;
5. anything else (one value per sample, dense maps, sequences) → ``regression``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Sequence

import numpy as np

from edgekit.errors import DataError, UsageError


@dataclass(frozen=True)
class MetricResult:
    """A metric's figures: ``value`` is the headline one (named ``headline``), ``values`` all of them.

    ``reference`` is the float model's result on the same samples, when meaningful.
    """

    metric: str
    headline: str
    values: dict[str, float]
    samples: int
    against: str  # "labels", "float model" or "targets"
    percent: tuple[str, ...] = ()  # names in ``values`` that are fractions, shown as %
    reference: "MetricResult | None" = None
    higher_is_better: bool = True
    labels: dict[str, str] = field(default_factory=dict)  # display names: {"top1": "top-1"}

    @property
    def value(self) -> float:
        return self.values[self.headline]

    def figures(self) -> str:
        """``top-1 91.20 % · top-5 99.10 %``."""
        return " · ".join(f"{self.labels.get(k, k)} {_fmt_value(v, k in self.percent)}" for k, v in self.values.items())

    def text(self) -> str:
        """One line for reports, the float model's figures beside the artifact's when known."""
        line = f"{self.figures()} vs {self.against} ({self.samples:,} samples)"
        if self.reference is not None:
            line += f"; float model {self.reference.figures()}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "headline": self.headline, "value": self.value, "values": dict(self.values),
            "samples": self.samples, "against": self.against, "higher_is_better": self.higher_is_better,
            "float": None if self.reference is None else dict(self.reference.values), "text": self.text(),
        }


class Metric(ABC):
    """A task metric: ``compute(outputs, labels, reference_outputs)`` → :class:`MetricResult`."""

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    # True when the float model's own figure is informative (computed on the labels)
    compares_float: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = True  # the headline's direction (what a search maximizes)

    @abstractmethod
    def compute(self, outputs: np.ndarray, labels: np.ndarray | None = None,
                reference_outputs: np.ndarray | None = None) -> MetricResult:
        """The metric of ``outputs`` (N×…) against labels or reference outputs of the same samples."""

    def _require(self, outputs: Any, labels: Any, reference_outputs: Any) -> np.ndarray:
        outputs = _array(outputs, "outputs")
        if self.needs_labels and labels is None:
            raise UsageError(f"metric {self.name} needs labels", "use data with labels, or --metric agreement")
        if self.needs_reference and reference_outputs is None:
            raise UsageError(f"metric {self.name} needs the float model's outputs",
                             "it compares with the float model: give a torch model, or use labels")
        if reference_outputs is not None:
            _same_shape(outputs, _array(reference_outputs, "reference outputs"), "reference outputs")
        return outputs


class Classification(Metric):
    name = "classification"
    needs_labels = True
    compares_float = True

    def compute(self, outputs: np.ndarray, labels: np.ndarray | None = None,
                reference_outputs: np.ndarray | None = None) -> MetricResult:
        scores = _scores(self._require(outputs, labels, reference_outputs), self.name)
        y = _class_labels(labels, scores)
        ranks = _label_ranks(scores, y)
        values = {"top1": float(np.mean(ranks < 1))}
        if scores.shape[1] > 5:  # with 5 classes or fewer top-5 is always 100 %
            values["top5"] = float(np.mean(ranks < 5))
        return MetricResult(self.name, "top1", values, len(y), "labels", percent=tuple(values),
                            labels={"top1": "top-1", "top5": "top-5"})


class Agreement(Metric):
    name = "agreement"
    needs_reference = True

    def compute(self, outputs: np.ndarray, labels: np.ndarray | None = None,
                reference_outputs: np.ndarray | None = None) -> MetricResult:
        scores = _scores(self._require(outputs, labels, reference_outputs), self.name)
        ref = _scores(_array(reference_outputs, "reference outputs"), self.name)
        agree = float(np.mean(scores.argmax(1) == ref.argmax(1)))
        return MetricResult(self.name, "top1_agreement", {"top1_agreement": agree}, len(scores), "float model",
                            percent=("top1_agreement",), labels={"top1_agreement": "top-1 agreement"})


class Embedding(Metric):
    name = "embedding"
    needs_reference = True

    def compute(self, outputs: np.ndarray, labels: np.ndarray | None = None,
                reference_outputs: np.ndarray | None = None) -> MetricResult:
        a = _flat(self._require(outputs, labels, reference_outputs))
        b = _flat(_array(reference_outputs, "reference outputs"))
        cos = _cosines(a, b)
        return MetricResult(self.name, "mean_cosine", {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())},
                            len(cos), "float model", labels={"mean_cosine": "mean cosine", "min_cosine": "min"})


class Regression(Metric):
    name = "regression"
    higher_is_better = False

    def compute(self, outputs: np.ndarray, labels: np.ndarray | None = None,
                reference_outputs: np.ndarray | None = None) -> MetricResult:
        outputs = self._require(outputs, None, reference_outputs)
        if labels is not None and _is_target(labels, outputs):
            target, against = _array(labels, "labels"), "targets"
        elif reference_outputs is not None:
            target, against = _array(reference_outputs, "reference outputs"), "float model"
        else:
            raise UsageError("metric regression needs targets shaped like the outputs or the float model's outputs",
                             "give labels of the outputs' shape, or a torch model to compare with")
        return _regression(outputs, target, against)

    def compute_float(self, reference_outputs: np.ndarray, labels: np.ndarray) -> MetricResult:
        return _regression(_array(reference_outputs, "reference outputs"), _array(labels, "labels"), "targets")


METRICS: dict[str, Metric] = {m.name: m for m in (Classification(), Agreement(), Embedding(), Regression())}


def get_metric(name: str) -> Metric:
    """The metric registered as ``name`` (``--metric NAME``)."""
    try:
        return METRICS[name]
    except KeyError:
        raise UsageError(f"unknown metric {name!r}", f"use one of {', '.join(METRICS)}") from None


def infer_metric(labels: np.ndarray | None, output_shape: Sequence[int]) -> str:
    """The metric's name for these labels and this output shape (rules in the module docstring)."""
    per_sample = tuple(output_shape[1:])
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim > 1 and int(np.prod(labels.shape[1:])) > 1:
            return "regression"
        if _classes(per_sample) > 1 and _integral(labels):
            return "classification"
        return "regression"
    if len(per_sample) == 1 and per_sample[0] > 1:
        return "agreement"
    if _classes(per_sample) > 1:
        return "embedding"
    return "regression"


def evaluate(metric: str | Metric, outputs: np.ndarray, *, labels: np.ndarray | None = None,
             reference_outputs: np.ndarray | None = None) -> MetricResult:
    """The artifact's figure, with the float model's beside it when it is not trivially perfect."""
    metric = get_metric(metric) if isinstance(metric, str) else metric
    result = metric.compute(outputs, labels, reference_outputs)
    if reference_outputs is None or labels is None:
        return result
    if metric.compares_float:
        return replace(result, reference=metric.compute(reference_outputs, labels, None))
    if isinstance(metric, Regression) and result.against == "targets":
        return replace(result, reference=metric.compute_float(reference_outputs, labels))
    return result


# --- helpers ---------------------------------------------------------------------------------


def _array(value: Any, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} are {array.dtype}, not numbers", "pass numeric arrays")
    if array.ndim == 0 or len(array) == 0:
        raise DataError(f"{what} have no samples", "pass arrays with the samples along the first dimension")
    return array


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise DataError(f"{what} are shaped {b.shape}, the outputs {a.shape}", "compare outputs of the same samples")


def _classes(per_sample: tuple[int, ...]) -> int:
    """C for a per-sample shape (C,) or (C, 1, 1, ...); 0 when it is not class-score-like."""
    if not per_sample or any(d != 1 for d in per_sample[1:]):
        return 0
    return int(per_sample[0])


def _scores(outputs: np.ndarray, metric: str) -> np.ndarray:
    """N×C class scores from (N, C) or (N, C, 1, 1) outputs."""
    c = _classes(outputs.shape[1:])
    if c < 2:
        raise DataError(f"metric {metric} needs class scores shaped (N, C), got outputs shaped {outputs.shape}",
                        "use --metric regression or embedding for these outputs")
    return outputs.reshape(len(outputs), c).astype(np.float64)


def _class_labels(labels: Any, scores: np.ndarray) -> np.ndarray:
    y = _array(labels, "labels")
    if not _integral(y):
        raise DataError(f"classification needs one integer label per sample, got {y.dtype} shaped {y.shape}",
                        "give class indices (0..C-1), or --metric regression for targets")
    if len(y) != len(scores):
        raise DataError(f"{len(y)} labels for {len(scores)} outputs", "give one label per sample")
    if y.min() < 0 or y.max() >= scores.shape[1]:
        raise DataError(f"label {int(y.max() if y.max() >= scores.shape[1] else y.min())} is outside the model's "
                        f"{scores.shape[1]} classes", "labels are class indices 0..C-1 (class folders sort by name)")
    return y.astype(np.int64)


def _label_ranks(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rank of each label's score, ties broken by class index as argmax does (rank 0 = top-1)."""
    own = scores[np.arange(len(y)), y][:, None]
    index = np.arange(scores.shape[1])[None, :]
    return np.sum((scores > own) | ((scores == own) & (index < y[:, None])), axis=1)


def _flat(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(len(outputs), -1).astype(np.float64)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (na * nb)
    # two zero vectors are the same embedding; one zero vector is not like any other
    return np.clip(np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, cos)), -1.0, 1.0)


def _integral(labels: np.ndarray) -> bool:
    """One whole number per sample (labels saved through a float array count)."""
    if labels.ndim != 1:
        return False
    return labels.dtype.kind in "iub" or (labels.dtype.kind == "f" and bool(np.all(labels == np.round(labels))))


def _is_target(labels: Any, outputs: np.ndarray) -> bool:
    y = np.asarray(labels)
    return y.dtype.kind in "biuf" and y.size == outputs.size and len(y) == len(outputs)


def _regression(outputs: np.ndarray, target: np.ndarray, against: str) -> MetricResult:
    if outputs.size != target.size:
        raise DataError(f"{against} are shaped {target.shape}, the outputs {outputs.shape}",
                        "compare outputs with targets of the same shape")
    diff = outputs.astype(np.float64) - target.reshape(outputs.shape).astype(np.float64)
    norm = float(np.linalg.norm(target.astype(np.float64)))
    rel = float(np.linalg.norm(diff)) / norm if norm > 0 else (0.0 if not diff.any() else float("inf"))
    values = {"mse": float(np.mean(diff**2)), "max_abs": float(np.max(np.abs(diff))), "relative_error": rel}
    return MetricResult("regression", "mse", values, len(outputs), against, percent=("relative_error",),
                        higher_is_better=False, labels={"mse": "MSE", "max_abs": "max|Δ|", "relative_error": "rel. error"})


def _fmt_value(value: float, percent: bool) -> str:
    return f"{value * 100:.2f} %" if percent else f"{value:.4g}"
