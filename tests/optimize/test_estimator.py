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


# --- in the search ---------------------------------------------------------------------------------

class _StandInDevice:
    """A stand-in for the target, on purpose: its p50 is an exact linear function of the candidate's
    multiply-adds, so whether the search skips a candidate is decided by the budget alone, not by this
    host's timing noise (real studies on the emulated target: test_study.py)."""

    def __init__(self) -> None:
        from edgekit.models import resolve_model

        self.resolved = resolve_model("example:fashion-cnn")
        self.deployed: list[str] = []

    def p50(self, steps: list) -> float:
        from edgekit.optimize.estimator import candidate_features

        f = candidate_features(self.resolved.module, self.resolved.example_inputs, steps)
        return 0.01 + 1e-7 * f["conv_macs"] + 1e-7 * f["linear_macs"]

    def __call__(self, model: str, device: str, options) -> object:  # noqa: ANN001 - edgekit.deploy's seam
        from pathlib import Path
        from types import SimpleNamespace as NS

        import yaml

        steps = yaml.safe_load(Path(options.recipe).read_text()) if options.recipe else []
        if model.startswith("example:"):
            out = Path(options.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "model.onnx").write_bytes(b"stand-in")
        self.deployed.append(options.recipe or model)
        ratio = next((s["prune"]["ratio"] for s in steps if "prune" in s), 0.0)
        p50 = self.p50(steps)
        return NS(accuracy=NS(metric="classification", values={"top1": 0.93 - 0.05 * ratio}, headline="top1", n=100),
                  latency=NS(p50_ms=p50, p90_ms=p50 * 1.1, representative=True),
                  artifact=NS(file="model.onnx", size_bytes=int(1e6 * (1 - ratio)), chosen_because=None),
                  memory=NS(peak_rss_mib=50.0), settings={"threads": 1, "runs": 20})


def test_the_search_skips_candidates_predicted_far_past_the_latency_budget(tmp_path) -> None:  # noqa: ANN001
    import json

    from edgekit.optimize import optimize

    device = _StandInDevice()
    settings = dict(data="example:fashion-mnist", eval_data="example:fashion-mnist", emulate=True,
                    prune_ratios=[0.25, 0.375, 0.5, 0.625, 0.75], exports=[("onnx", "fp32")], strategy="random",
                    seed=0, deploy=device)
    # no latency budget: nothing is skipped, and once 4 are measured each new trial is predicted first
    free = optimize("example:fashion-cnn", "pi4", out=tmp_path / "free", trials=8, **settings)
    assert all(r.status == "ok" for r in free.trials)
    predicted = [r for r in free.trials if "predicted_p50_ms" in r.extra]
    assert [r.number for r in predicted] == list(range(MIN_FIT, 8))  # predicted only from the 5th trial on
    assert free.estimator["predicted_then_measured"] == 8 - MIN_FIT and free.estimator["within_tolerance"] == 1.0

    # a limit between the baseline's p50 and the pruned ones': candidates predicted over it by > 25 % are skipped
    limit = device.p50([{"prune": {"structure": "channels", "ratio": 0.5, "importance": "magnitude"}}])
    folder = tmp_path / "budget"
    calls = len(device.deployed)
    tight = optimize("example:fashion-cnn", "pi4", out=folder, trials=8, max_latency_ms=limit, **settings)
    skipped = [r for r in tight.trials if r.status == "skipped"]
    assert skipped, "nothing skipped: the budget should rule out the lightly pruned and low-rank-only candidates"
    for r in skipped:
        assert r.extra["predicted_p50_ms"] > limit * 1.25 and "not measured" in r.error
        assert device.p50(_recipe(r)) > limit * 1.25  # and the stand-in device agrees: truly slow
    measured = len(device.deployed) - calls
    assert sum(r.status == "ok" for r in tight.trials) == 8  # skipped ones do not count as trials
    # 8 trials, then the front, the recommended one and the baseline re-scored (each once)
    assert len(tight.front_final) >= 2 and {0, tight.recommended.number} <= set(tight.front_final)
    assert measured == 8 + len(tight.front_final)
    assert tight.estimator["skipped"] == len(skipped)
    rows = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows].count("skipped") == len(skipped)

    # rerun with the estimator's skipping off: the skipped candidates are measured now
    again = optimize("example:fashion-cnn", "pi4", out=folder, trials=8 + len(skipped), max_latency_ms=limit,
                     skip_predicted=False, **settings)
    assert not [r for r in again.trials if r.status == "skipped"]
    assert again.reused >= 8


def _recipe(record) -> list:  # noqa: ANN001
    from edgekit.optimize.space import SearchSpace

    space = SearchSpace(exports=(("onnx", "fp32"),), low_rank_layers=("classifier.1",))
    return space.recipe(record.candidate)


def test_a_fleet_measures_one_trial_per_board_at_a_time_and_fits_each_board_apart(tmp_path) -> None:  # noqa: ANN001
    import threading
    import time

    from edgekit.errors import ConnectionFailedError
    from edgekit.fleet import FleetHost
    from edgekit.optimize import optimize

    device = _StandInDevice()
    busy: dict[str, int] = {}
    served: dict[str, int] = {}
    overlap: list[str] = []
    lock = threading.Lock()

    def board_deploy(model: str, dev: str, options) -> object:  # noqa: ANN001
        with lock:
            busy[options.host] = busy.get(options.host, 0) + 1
            served[options.host] = served.get(options.host, 0) + 1
            if busy[options.host] > 1:
                overlap.append(options.host)
        try:
            time.sleep(0.3)  # long enough for the other board to be handed a trial meanwhile
            if options.host == "pi@flaky" and served["pi@flaky"] > 1:  # lost after its first trial
                raise ConnectionFailedError("pi@flaky: no route to host")
            return device(model, dev, options)
        finally:
            with lock:
                busy[options.host] -= 1

    boards = [FleetHost("pi@steady", "steady"), FleetHost("pi@flaky", "flaky")]
    result = optimize("example:fashion-cnn", "pi4", hosts=boards, out=tmp_path, data="example:fashion-mnist",
                      eval_data="example:fashion-mnist", prune_ratios=[0.25, 0.5, 0.75], exports=[("onnx", "fp32")],
                      strategy="random", seed=0, trials=10, deploy=board_deploy)
    assert not overlap  # a board never measured two trials at once
    targets = [r.extra["target"] for r in result.trials]
    assert targets[0] == "steady" and {"steady", "flaky"} <= set(targets)  # the baseline on the first board
    assert len({r.candidate.key() for r in result.trials}) == len(result.trials) == 10  # no candidate twice
    spans = sorted((r.extra["started"], r.extra["ended"]) for r in result.trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # the boards did work at the same time
    failed = [r for r in result.trials if r.status == "failed"]
    assert len(failed) == 1 and failed[0].extra["target"] == "flaky" and "no route to host" in failed[0].error
    assert served["pi@flaky"] == 2  # lost: no trial after the failed one
    after = targets[result.trials.index(failed[0]) + 1:]
    assert after and set(after) == {"steady"}  # the study went on without it
    assert result.recommended.ok
    assert set(result.estimator) >= {"predicted_then_measured", "skipped"}
