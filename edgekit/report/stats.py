"""Summaries of raw latency samples (the runner sends samples, never aggregates)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """Percentiles, mean, spread and throughput of per-inference latencies in milliseconds."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    mean = float(values.mean())
    return {
        "n": int(values.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "throughput_ips": 1000.0 / mean if mean > 0 else 0.0,
    }
