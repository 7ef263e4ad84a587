"""Budgets, the Pareto front and the one recommended trial.

A budget is any subset of: p50 latency (ms) or a speed-up over the baseline, artifact size (KB = 1,000 bytes), peak memory of the
runner process on the target (MiB) and metric drop (percentage points below the baseline: the
uncompressed model at fp32, measured the same way).
The recommendation is the most accurate trial that meets every budget; ties go to the faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from edgekit.errors import UsageError
from edgekit.optimize.history import TrialRecord


@dataclass(frozen=True)
class Budget:
    """Limits a recommended model must meet (None: no limit)."""

    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_drop_pt: float | None = None
    max_memory_mib: float | None = None
    min_speedup: float | None = None  # p50 at least this many times faster than the baseline's
    baseline_p50_ms: float | None = None  # set by ``for_baseline`` once the baseline is measured

    def check(self) -> None:
        """Refuse negative, zero (latency, size) or non-finite limits with one line."""
        for name, value, zero_ok in (("max_latency_ms", self.max_latency_ms, False),
                                     ("max_size_kb", self.max_size_kb, False),
                                     ("max_drop_pt", self.max_drop_pt, True),
                                     ("max_memory_mib", self.max_memory_mib, False),
                                     ("min_speedup", self.min_speedup, False)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and not zero_ok):
                bound = ">= 0" if zero_ok else "> 0"
                raise UsageError(f"{name} must be a number {bound}, not {value!r}")

    def for_baseline(self, baseline_p50_ms: float) -> "Budget":
        """This budget with ``min_speedup`` turned into a p50 limit against the measured baseline."""
        if self.min_speedup is None:
            return self
        limit = baseline_p50_ms / self.min_speedup
        if self.max_latency_ms is not None:
            limit = min(limit, self.max_latency_ms)
        return replace(self, max_latency_ms=limit, baseline_p50_ms=baseline_p50_ms)

    def violations(self, record: TrialRecord, baseline_metric: float | None) -> list[str]:
        """What ``record`` misses, each as a short phrase ("p50 0.41 ms > 0.30 ms"); empty: it meets all."""
        if not record.ok:
            return [f"trial failed: {record.error}"]
        missed = []
        if self.max_latency_ms is not None and record.latency_p50_ms > self.max_latency_ms:
            missed.append(f"p50 {record.latency_p50_ms:.3g} ms > {self.max_latency_ms:g} ms")
        if self.max_size_kb is not None and record.size_bytes / 1000 > self.max_size_kb:
            missed.append(f"size {record.size_bytes / 1000:.1f} KB > {self.max_size_kb:g} KB")
        if self.max_memory_mib is not None:
            if record.peak_rss_mib is None:
                missed.append("peak memory not measured on this target")
            elif record.peak_rss_mib > self.max_memory_mib:
                missed.append(f"peak memory {record.peak_rss_mib:.1f} MiB > {self.max_memory_mib:g} MiB")
        if self.max_drop_pt is not None and baseline_metric is not None:
            drop = drop_pt(baseline_metric, record.metric)
            if drop > self.max_drop_pt:
                missed.append(f"drop {drop:.2f} pt > {self.max_drop_pt:g} pt")
        return missed

    def describe(self) -> str:
        parts = []
        if self.min_speedup is not None:
            parts.append(f"≥ {self.min_speedup:g}× faster than the baseline")
        if self.max_latency_ms is not None:
            parts.append(f"p50 ≤ {self.max_latency_ms:.4g} ms")
        if self.max_size_kb is not None:
            parts.append(f"size ≤ {self.max_size_kb:g} KB")
        if self.max_memory_mib is not None:
            parts.append(f"peak memory ≤ {self.max_memory_mib:g} MiB")
        if self.max_drop_pt is not None:
            parts.append(f"drop ≤ {self.max_drop_pt:g} pt")
        return ", ".join(parts) or "no budget"


def drop_pt(baseline: float, metric: float) -> float:
    """Percentage points lost against the baseline (negative: better than the baseline)."""
    return (baseline - metric) * 100.0


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The trials no other trial beats on all of metric (higher), p50 latency and size (lower).

    Sorted fastest first. Equal points keep the earliest trial only.
    """
    ok = [r for r in records if r.ok]
    front = []
    for r in ok:
        dominated = False
        for o in ok:
            if o is r:
                continue
            no_worse = o.metric >= r.metric and o.latency_p50_ms <= r.latency_p50_ms and o.size_bytes <= r.size_bytes
            better = o.metric > r.metric or o.latency_p50_ms < r.latency_p50_ms or o.size_bytes < r.size_bytes
            if no_worse and (better or o.number < r.number):
                dominated = True
                break
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r.latency_p50_ms, -r.metric))


def recommend(records: Sequence[TrialRecord], budget: Budget, baseline_metric: float | None) -> TrialRecord | None:
    """The most accurate trial meeting every budget (ties: the faster, then the smaller); None if none does."""
    meeting = [r for r in records if r.ok and not budget.violations(r, baseline_metric)]
    if not meeting:
        return None
    return max(meeting, key=lambda r: (r.metric, -r.latency_p50_ms, -r.size_bytes))


def closest(records: Sequence[TrialRecord], budget: Budget, baseline_metric: float | None) -> TrialRecord | None:
    """The trial that misses the budget by least (summed relative excess over the limits)."""
    ok = [r for r in records if r.ok]
    if not ok:
        return None

    def excess(r: TrialRecord) -> float:
        total = 0.0
        if budget.max_latency_ms is not None:
            total += max(0.0, r.latency_p50_ms / budget.max_latency_ms - 1)
        if budget.max_size_kb is not None:
            total += max(0.0, r.size_bytes / 1000 / budget.max_size_kb - 1)
        if budget.max_memory_mib is not None and r.peak_rss_mib is not None:
            total += max(0.0, r.peak_rss_mib / budget.max_memory_mib - 1)
        if budget.max_drop_pt is not None and baseline_metric is not None:
            total += max(0.0, drop_pt(baseline_metric, r.metric) - budget.max_drop_pt) / 100
        return total

    return min(ok, key=lambda r: (excess(r), -r.metric))


def hypervolume(records: Sequence[TrialRecord], ref_latency_ms: float, ref_metric: float = 0.0) -> float:
    """The area (metric × latency) the front dominates up to a reference point: bigger is better.

    Two objectives (metric up, p50 down) so strategies compare on one number; size is left out.
    """
    pts = sorted(((r.latency_p50_ms, r.metric) for r in records
                  if r.ok and r.latency_p50_ms < ref_latency_ms and r.metric > ref_metric))
    area, best = 0.0, ref_metric
    edges = [p[0] for p in pts] + [ref_latency_ms]
    for (lat, met), next_lat in zip(pts, edges[1:]):
        best = max(best, met)
        area += (next_lat - lat) * (best - ref_metric)
    return area


__all__ = ["Budget", "closest", "drop_pt", "hypervolume", "pareto_front", "recommend"]
