"""A latency estimator per device: latency from each layer's multiply-adds, bytes moved and op type.

Fitted on latencies measured on one device (a board, or this host under ``--emulate``: each is its
own device, never a stand-in for another), one model per (format, precision), because a runtime's
fp32 and int8 kernels have different costs per multiply-add. The model is linear with
non-negative coefficients (nn-Meter's kernel view, simplified to one kernel per op type)::

    latency ≈ c0 + c_conv·MACs(conv) + c_dw·MACs(depthwise) + c_fc·MACs(linear)
                 + c_bytes·bytes moved + c_op·layers

Bytes moved are each layer's input and output activations and its weights at 4 bytes per value
(a proxy: int8 files move fewer, which the per-precision fit absorbs). Features come from the
torch model (forward hooks on one example input), so a candidate is estimated before it is
fine-tuned, exported or measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import UsageError

FEATURES = ("const", "conv_macs", "depthwise_macs", "linear_macs", "bytes", "layers")
MIN_FIT = 4  # measured models per (format, precision) before the estimator predicts anything
# A candidate is skipped unmeasured only when predicted this far beyond the latency limit: more than the
# ±20 % the estimator is judged on (benchmarks/estimator.py), so a near miss is always measured.
SKIP_MARGIN = 0.25


def features(model: Any, example_inputs: Sequence[Any]) -> dict[str, float]:
    """The estimator's features of ``model`` for one example input (batch as given)."""
    import torch
    from torch import nn

    totals = dict.fromkeys(FEATURES, 0.0)
    totals["const"] = 1.0

    def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        y = output if isinstance(output, torch.Tensor) else None
        if x is None or y is None:
            return
        weights = sum(p.numel() for p in module.parameters(recurse=False))
        totals["bytes"] += 4.0 * (x.numel() + y.numel() + weights)
        totals["layers"] += 1
        if isinstance(module, nn.Conv2d):
            macs = y.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
            depthwise = module.groups > 1 and module.groups == module.in_channels
            totals["depthwise_macs" if depthwise else "conv_macs"] += float(macs)
        elif isinstance(module, nn.Linear):
            totals["linear_macs"] += float(y.numel() * module.in_features)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return totals


def candidate_features(model: Any, example_inputs: Sequence[Any], steps: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Features of the model a recipe makes, from a copy of ``model``: its prune and low-rank steps
    applied without data (magnitude channel scores, SVD), fine-tune and KD fine-tune steps left out
    (they change the weights, not the shapes). Other steps are refused: their shapes need data."""
    from edgekit.compress import low_rank, prune

    verbs: dict[str, Callable[..., Any]] = {"prune": prune, "low_rank": low_rank}
    shaped = copy.deepcopy(model)
    for step in steps:
        (kind, config), = step.items()
        if kind == "finetune" or (kind == "distill" and config.get("teacher") == "original"):
            continue  # training changes the weights, not the shapes
        if kind not in verbs:
            raise UsageError(f"the latency estimator cannot shape a {kind!r} step",
                             "the search measures such a candidate instead")
        if kind == "prune":
            # data-driven criteria (taylor, activation) need data; magnitude cuts as many channels per
            # layer (a layer-scope cut) or spreads a global cut differently: the shape is approximate there
            config = {**config, "importance": "magnitude"}
        shaped, _report = verbs[kind](shaped, config, example_inputs=example_inputs)
    return features(shaped, example_inputs)


@dataclass
class Sample:
    """One measured model: its features, where it ran (format, precision) and its p50 latency."""

    features: dict[str, float]
    format: str
    precision: str
    latency_ms: float
    label: str = ""


@dataclass
class LatencyEstimator:
    """Per-(format, precision) non-negative linear fits for one device."""

    device: str
    coefficients: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    fitted_on: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def fit(cls, device: str, samples: Sequence[Sample]) -> "LatencyEstimator":
        """Fit on ``samples`` measured on ``device``; a (format, precision) with fewer than
        ``MIN_FIT`` samples gets no model (``predict`` says None)."""
        est = cls(device)
        groups: dict[tuple[str, str], list[Sample]] = {}
        for s in samples:
            groups.setdefault((s.format, s.precision), []).append(s)
        for key, group in groups.items():
            if len(group) < MIN_FIT:
                continue
            X = np.array([[g.features[f] for f in FEATURES] for g in group], dtype=np.float64)
            y = np.array([g.latency_ms for g in group], dtype=np.float64)
            est.coefficients[key] = _nonnegative_fit(X, y)
            est.fitted_on[key] = len(group)
        return est

    def predict(self, feats: dict[str, float], fmt: str, precision: str) -> float | None:
        """Estimated p50 ms, or None where this device has too few measurements of that kind."""
        coef = self.coefficients.get((fmt, precision))
        if coef is None:
            return None
        return float(np.array([feats[f] for f in FEATURES]) @ coef)

    def errors(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        """Per sample: predicted, measured and the relative error (None where no model applies)."""
        rows = []
        for s in samples:
            predicted = self.predict(s.features, s.format, s.precision)
            rel = None if predicted is None else (predicted - s.latency_ms) / s.latency_ms
            rows.append({"label": s.label, "format": s.format, "precision": s.precision,
                         "measured_ms": s.latency_ms, "predicted_ms": predicted, "relative_error": rel})
        return rows


class SearchEstimator:
    """The estimator as a study uses it: refitted on the study's measured trials (one device: the
    study's target), predicting each new candidate before it is measured.

    ``shape`` maps a candidate to its features (``candidate_features`` of its recipe); the results
    are cached per candidate, so each shape is computed once per run.
    """

    def __init__(self, device: str, shape: Callable[[Any], dict[str, float]]) -> None:
        self.device = device
        self.shape = shape
        self.model = LatencyEstimator(device)
        self._features: dict[str, dict[str, float]] = {}

    def features_of(self, candidate: Any) -> dict[str, float]:
        key = candidate.key()
        if key not in self._features:
            self._features[key] = self.shape(candidate)
        return self._features[key]

    def refit(self, records: Sequence[Any]) -> None:
        """Fit on every measured trial (``ok`` records) of ``records``."""
        samples = [Sample(self.features_of(r.candidate), r.candidate.format, r.candidate.precision,
                          r.latency_p50_ms, str(r.number)) for r in records if r.ok]
        self.model = LatencyEstimator.fit(self.device, samples)

    def predict(self, candidate: Any) -> float | None:
        return self.model.predict(self.features_of(candidate), candidate.format, candidate.precision)

    @staticmethod
    def misses(predicted: float | None, limit_ms: float | None) -> bool:
        """Whether a prediction is far enough past the limit to skip measuring (``SKIP_MARGIN``)."""
        return predicted is not None and limit_ms is not None and predicted > limit_ms * (1 + SKIP_MARGIN)


def prediction_summary(records: Sequence[Any], tolerance: float = 0.20) -> dict[str, Any]:
    """How the predictions made before measuring compared with the measurements (trial ``extra``:
    ``predicted_p50_ms``), and how many candidates were skipped on a prediction."""
    checked = [r for r in records if r.ok and r.extra.get("predicted_p50_ms") is not None]
    errors = [(r.extra["predicted_p50_ms"] - r.latency_p50_ms) / r.latency_p50_ms for r in checked]
    summary: dict[str, Any] = {"predicted_then_measured": len(checked),
                               "skipped": sum(r.status == "skipped" for r in records),
                               "skip_margin": SKIP_MARGIN, "tolerance": tolerance}
    if errors:
        summary["within_tolerance"] = round(sum(abs(e) <= tolerance for e in errors) / len(errors), 3)
        summary["median_abs_error"] = round(float(np.median(np.abs(errors))), 3)
        summary["worst_error"] = round(max(errors, key=abs), 3)
    return summary


def within(rows: Sequence[dict[str, Any]], tolerance: float = 0.20) -> float:
    """Share of predicted rows whose relative error is within ±``tolerance``."""
    judged = [r for r in rows if r["relative_error"] is not None]
    if not judged:
        raise UsageError("no prediction to judge", f"measure at least {MIN_FIT} models of each format and precision")
    return sum(abs(r["relative_error"]) <= tolerance for r in judged) / len(judged)


def _nonnegative_fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error with coefficients ≥ 0: columns are scaled to unit size,
    rows weighted by 1/y (a 20 % miss on a fast model counts as much as on a slow one), and the
    most negative coefficient is dropped until none is left (an active-set loop; a handful of
    columns)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale / y[:, None]
    ys = np.ones_like(y)
    active = [j for j in range(X.shape[1]) if np.any(X[:, j])]
    while True:
        coef = np.zeros(X.shape[1])
        if active:
            sol, *_ = np.linalg.lstsq(Xs[:, active], ys, rcond=None)
            coef[active] = sol
        negative = [j for j in active if coef[j] < 0]
        if not negative:
            return coef / scale
        active.remove(min(negative, key=lambda j: coef[j]))


__all__ = ["FEATURES", "LatencyEstimator", "MIN_FIT", "SKIP_MARGIN", "Sample", "SearchEstimator", "candidate_features",
           "features", "prediction_summary", "within"]
