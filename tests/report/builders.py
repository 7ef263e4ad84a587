"""Reports built directly from the schema, with realistic raw latency samples (no deploy run)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.report.schema import (
    AccuracySummary,
    ArtifactSummary,
    CandidateSummary,
    CompressReport,
    DeployReport,
    ExportReport,
    LatencySummary,
    MemorySummary,
    OpProfileEntry,
    ParitySummary,
    RuntimeSummary,
    StepMetrics,
    StepSummary,
    TargetSummary,
)
from edgekit.report.stats import latency_summary

PI4_PROFILE = {"name": "pi4", "description": "Raspberry Pi 4 Model B (4 GB)", "arch": "aarch64",
               "cpu": {"model": "Broadcom BCM2711, 4x Cortex-A72", "cores": 4, "max_clock_mhz": 1800},
               "memory_mib": 4096, "threads": 4}


def latency_samples(seed: int, median_ms: float = 4.2, n: int = 200, sigma: float = 0.08,
                    drift: float = 0.0, spikes: float = 0.01) -> list[float]:
    """Per-inference latencies as a small board produces them: lognormal body, rare spikes, drift."""
    rng = np.random.default_rng(seed)
    body = rng.lognormal(np.log(median_ms), sigma, n)
    body *= 1.0 + drift * np.linspace(0.0, 1.0, n)  # slowing down as the board warms up
    spike = rng.random(n) < spikes
    body[spike] *= rng.uniform(1.5, 3.0, spike.sum())  # a scheduler hiccup now and then
    return [round(float(v), 4) for v in body]


def warmup_samples(seed: int, median_ms: float = 4.2, n: int = 20) -> list[float]:
    rng = np.random.default_rng(seed + 1000)
    decay = 1.0 + 1.2 * np.exp(-np.arange(n) / 3.0)  # caches and allocators settling
    return [round(float(v), 4) for v in median_ms * decay * rng.lognormal(0, 0.05, n)]


def deploy_report(seed: int = 0, median_ms: float = 4.2, n: int = 200, sigma: float = 0.08, drift: float = 0.03,
                  accuracy: float | None = 0.9012, size_bytes: int = 112_640, **overrides: Any) -> DeployReport:
    samples = latency_samples(seed, median_ms, n, sigma, drift)
    warmup = warmup_samples(seed, median_ms)
    fields: dict[str, Any] = dict(
        edgekit_version="0.1.0",
        model="example:fashion-cnn",
        device="pi4",
        profile=PI4_PROFILE,
        target=TargetSummary(kind="ssh", address="pi@raspberrypi.local:22"),
        artifact=ArtifactSummary(file="fashion_cnn.int8.onnx", format="onnx", precision="int8", size_bytes=size_bytes,
                                 sha256="3f1c2a9be0d4" + "0" * 52, reference_size_bytes=421_888,
                                 chosen_because="first of pi4's preferred formats this install can export",
                                 manifest={"opset": 17, "inputs": [{"name": "input", "shape": [1, 1, 28, 28]}]}),
        runtime=RuntimeSummary(name="onnxruntime", version="1.20.1", providers=["CPUExecutionProvider"], threads=4),
        settings={"runs": n, "warmup": len(warmup), "threads": 4, "min_seconds": 0.0},
        latency=LatencySummary(import_ms=412.0, init_ms=38.5, first_ms=9.7, samples_ms=samples, warmup_ms=warmup,
                               **latency_summary(samples)),
        memory=MemorySummary(peak_rss_mib=61.3, baseline_rss_mib=48.9),
        parity=ParitySummary(reference="torch", n=64, max_abs_diff=0.031, mean_abs_diff=0.004, top1_agreement=0.984,
                             tolerance=0.1, passed=True),
        accuracy=AccuracySummary(dataset="fashion-mnist test", n=10000, accuracy=accuracy,
                                 reference_accuracy=0.9034) if accuracy is not None else None,
        device_facts={"machine": "aarch64", "system": "Linux", "release": "6.6.31+rpt-rpi-v8", "python": "3.11.2",
                      "cpu_model": "Cortex-A72", "cores": 4, "board": "Raspberry Pi 4 Model B Rev 1.5",
                      "memory_total_kib": 3884584, "emulated_by": None},
        state_before={"governor": "ondemand", "cur_freq_khz": 1800000, "max_freq_khz": 1800000, "temperature_c": 48.2,
                      "throttled": {"raw": "0x0", "now": {"under_voltage": False, "throttled": False},
                                    "since_boot": {"under_voltage": False, "throttled": False}}},
        state_after={"governor": "ondemand", "cur_freq_khz": 1500000, "max_freq_khz": 1800000, "temperature_c": 61.4,
                     "throttled": {"raw": "0x0", "now": {"under_voltage": False, "throttled": False},
                                   "since_boot": {"under_voltage": False, "throttled": False}}},
        warnings=["CPU governor is 'ondemand' (state before the run), not 'performance': latency may vary with "
                  "the clock"],
        notes=["calibrated on 256 fashion-mnist training images"],
    )
    fields.update(overrides)
    return DeployReport(**fields)


def op_profile() -> list[OpProfileEntry]:
    rows = [("Conv", "/conv1/Conv", 1.21), ("Conv", "/conv2/Conv", 1.64), ("MatMul", "/fc1/MatMul", 0.52),
            ("Relu", "/relu1/Relu", 0.11), ("MaxPool", "/pool/MaxPool", 0.19), ("QuantizeLinear", "input_q", 0.07)]
    total = sum(ms for _, _, ms in rows)
    return [OpProfileEntry(op=op, name=name, total_ms=ms * 200, count=200, percent=100 * ms / total)
            for op, name, ms in rows]


def compress_report() -> CompressReport:
    base = StepMetrics(params=421_642, nonzero_params=421_642, size_bytes=1_690_000, accuracy=0.9034, latency_ms=6.1)
    pruned = StepMetrics(params=210_400, nonzero_params=210_400, size_bytes=845_000, accuracy=0.8971, latency_ms=3.9)
    tuned = StepMetrics(params=210_400, nonzero_params=210_400, size_bytes=845_000, accuracy=0.9018, latency_ms=3.9)
    quant = StepMetrics(params=210_400, nonzero_params=210_400, size_bytes=845_000, artifact_bytes=226_000,
                        accuracy=0.8996, latency_ms=2.4)
    return CompressReport(
        edgekit_version="0.1.0", model="example:fashion-cnn", dataset="fashion-mnist test (10000 images)",
        latency_where="host", recipe={"steps": [{"structured_prune": {"ratio": 0.5}}, {"finetune": {"epochs": 2}},
                                                {"quantize": {"precision": "int8"}}]},
        steps=[
            StepSummary(name="structured_prune", settings={"ratio": 0.5}, before=base, after=pruned, seconds=3.2),
            StepSummary(name="finetune", settings={"epochs": 2}, before=pruned, after=tuned, seconds=41.0,
                        extra={"loss": [0.412, 0.297]}, notes=["stopped early: validation accuracy stopped improving"]),
            StepSummary(name="quantize", settings={"precision": "int8"}, before=tuned, after=quant, seconds=5.5),
        ],
        candidates=[
            CandidateSummary(label="ratio 0.3", metrics=StepMetrics(size_bytes=1_180_000, accuracy=0.9025,
                                                                   latency_ms=4.8)),
            CandidateSummary(label="ratio 0.7", metrics=StepMetrics(size_bytes=520_000, accuracy=0.8702,
                                                                   latency_ms=2.9)),
        ],
        warnings=["finetune ran on 2 epochs only"],
    )


def export_report() -> ExportReport:
    return ExportReport(
        model="example:fashion-cnn", edgekit_version="0.1.0",
        artifact=ArtifactSummary(file="fashion_cnn.fp16.onnx", format="onnx", precision="fp16", size_bytes=211_000,
                                 sha256="ab" * 32),
        parity=ParitySummary(reference="torch", n=64, max_abs_diff=0.0009, mean_abs_diff=0.0001, passed=True,
                             tolerance=0.01),
        export_seconds=2.4,
    )


def v1_report_dict() -> dict[str, Any]:
    """A report as the first release (schema_version 1) wrote it: no run_id, no op_profile."""
    data = deploy_report(seed=7, n=60).model_dump(mode="json")
    for key in ("run_id", "op_profile"):
        data.pop(key)
    data["schema_version"] = 1
    return data
