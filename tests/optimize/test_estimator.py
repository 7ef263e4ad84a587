"""The per-device latency estimator: its features count what a layer computes, its fit is
non-negative and per (format, precision), and it says None where it has too little to go on.
(Its accuracy on measured models is benchmarks/estimator.py's figure, not a unit test's.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.errors import UsageError
from edgekit.optimize.estimator import MIN_FIT, LatencyEstimator, Sample, features, within


def test_features_count_multiply_adds_per_op_type() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    f = features(model, (torch.zeros(1, 3, 4, 4),))
    assert f["conv_macs"] == 8 * 4 * 4 * 3 * 3 * 3  # output elements × (in/groups) × k × k
    assert f["depthwise_macs"] == 8 * 4 * 4 * 1 * 3 * 3
    assert f["linear_macs"] == 10 * 128
    assert f["layers"] == 5 and f["const"] == 1.0
    weights = sum(p.numel() for p in model.parameters())
    activations = (48 + 128) + (128 + 128) + (128 + 128) + (128 + 128) + (128 + 10)
    assert f["bytes"] == 4.0 * (weights + activations)


def _samples(fmt: str, n: int, cost: dict[str, float], seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        feats = {"const": 1.0, "conv_macs": float(rng.integers(1e4, 1e6)), "depthwise_macs": 0.0,
                 "linear_macs": float(rng.integers(1e3, 1e5)), "bytes": float(rng.integers(1e4, 1e5)),
                 "layers": float(rng.integers(3, 12))}
        out.append(Sample(feats, fmt, "fp32", sum(cost.get(k, 0.0) * v for k, v in feats.items()), f"m{i}"))
    return out


def test_fit_recovers_a_linear_cost_and_predicts_unseen_models() -> None:
    cost = {"const": 0.01, "conv_macs": 2e-8, "linear_macs": 1e-8, "layers": 0.002}
    est = LatencyEstimator.fit("test", _samples("onnx", 8, cost))
    rows = est.errors(_samples("onnx", 10, cost, seed=1))
    assert max(abs(r["relative_error"]) for r in rows) < 1e-6
    assert within(rows) == 1.0
    assert (est.coefficients[("onnx", "fp32")] >= 0).all()


def test_coefficients_stay_non_negative_on_noisy_data() -> None:
    cost = {"const": 0.01, "conv_macs": 2e-8}
    samples = _samples("tflite", 12, cost)
    noise = np.random.default_rng(3).normal(1.0, 0.05, len(samples))
    for s, k in zip(samples, noise):
        s.latency_ms *= float(k)
    est = LatencyEstimator.fit("test", samples)
    assert (est.coefficients[("tflite", "fp32")] >= 0).all()
    assert within(est.errors(samples), 0.2) == 1.0


def test_too_few_measurements_of_a_kind_predict_nothing() -> None:
    cost = {"const": 0.01, "conv_macs": 2e-8}
    est = LatencyEstimator.fit("test", _samples("onnx", MIN_FIT, cost) + _samples("tflite", MIN_FIT - 1, cost))
    probe = _samples("tflite", 1, cost)[0]
    assert est.predict(probe.features, "onnx", "fp32") is not None
    assert est.predict(probe.features, "tflite", "fp32") is None
    assert est.predict(probe.features, "onnx", "int8") is None  # int8 kernels are another model
    with pytest.raises(UsageError, match="no prediction"):
        within(est.errors([probe]))
