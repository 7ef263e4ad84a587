"""Compare two runs: latency with a significance test, accuracy, size and memory.

Latency is compared on the raw steady-state samples of both runs (``latency.samples_ms``) with
the two-sided Mann-Whitney U test (normal approximation with tie and continuity corrections,
as scipy's ``mannwhitneyu(..., method="asymptotic")``). A *latency regression* is a shift that
is both statistically significant (p < ``alpha``) and larger than ``threshold``: significance
alone would flag 0.3 % on 10 000 samples, size alone would flag noise on 20 samples.

The size of the shift is the Hodges-Lehmann estimate that goes with the U test: the median of
all pairwise log-ratios ``log(b_j / a_i)``, as a relative change (+0.20: B is 20 % slower). For
the lognormal-ish latencies of a board it is steadier than the ratio of the two medians, which
keeps a true 1 % change from being read as 5 % by chance.

Caveat, written in every comparison's notes when it applies: the test assumes independent
samples. Latencies drift with the clock and temperature, so p-values are optimistic when a run
drifts; the threshold on the median shift is what keeps a CI gate honest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from edgekit.errors import UsageError
from edgekit.report.schema import DeployReport

DEFAULT_THRESHOLD = 0.05  # 5 % slower median latency, 5 % bigger artifact
DEFAULT_ALPHA = 0.05
DEFAULT_ACCURACY_DROP = 0.005  # half a percentage point
MIN_SAMPLES = 8  # below this the normal approximation of U is not worth reporting


@dataclass
class MannWhitneyResult:
    u: float  # U statistic of the first sample
    z: float
    p_value: float  # two-sided
    effect: float  # P(b > a) + P(b = a) / 2: 0.5 means no shift, 1.0 means b always larger


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test of ``a`` against ``b`` (normal approximation)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs two non-empty samples")
    both = np.concatenate([x, y])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_ranks = ends - (counts - 1) / 2.0  # 1-based rank, averaged over ties
    ranks = average_ranks[inverse]
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    mean = n1 * n2 / 2.0
    ties = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every value equal: no evidence of any shift
        return MannWhitneyResult(u=u1, z=0.0, p_value=1.0, effect=0.5)
    delta = u1 - mean
    # continuity correction: move |U - mean| half a step towards 0 (and never past it)
    z = math.copysign(max(abs(delta) - 0.5, 0.0), delta) / math.sqrt(variance)
    p_value = min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))
    return MannWhitneyResult(u=u1, z=z, p_value=p_value, effect=1.0 - u1 / (n1 * n2))


def hodges_lehmann(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of all pairwise differences ``b_j - a_i``, without building the n_a × n_b array.

    Bisection on the difference: the number of pairs at most ``d`` apart is a sum of
    ``searchsorted`` counts, so 10 000 × 10 000 samples cost milliseconds, not 800 MB.
    """
    xs = np.sort(np.asarray(a, dtype=np.float64))
    ys = np.sort(np.asarray(b, dtype=np.float64))
    if xs.size == 0 or ys.size == 0:
        raise ValueError("hodges_lehmann needs two non-empty samples")
    total = xs.size * ys.size

    def kth_smallest(k: int) -> float:  # 1-based
        lo, hi = float(ys[0] - xs[-1]), float(ys[-1] - xs[0])
        if int(np.sum(xs.size - np.searchsorted(xs, ys - lo, side="left"))) >= k:
            return lo
        for _ in range(200):
            mid = (lo + hi) / 2
            if not lo < mid < hi:
                break
            if int(np.sum(xs.size - np.searchsorted(xs, ys - mid, side="left"))) >= k:
                hi = mid
            else:
                lo = mid
        return hi

    if total % 2:
        return kth_smallest(total // 2 + 1)
    return (kth_smallest(total // 2) + kth_smallest(total // 2 + 1)) / 2


def relative_shift(a: Sequence[float], b: Sequence[float]) -> float:
    """How much slower B is than A, as a fraction: exp(HL of the log latencies) - 1."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if (x > 0).all() and (y > 0).all():
        return float(np.expm1(hodges_lehmann(np.log(x), np.log(y))))
    median = float(np.median(x))  # a zero or negative timing: fall back to a linear shift
    return hodges_lehmann(x, y) / median if median else 0.0


@dataclass
class LatencyComparison:
    n_a: int
    n_b: int
    median_a_ms: float | None
    median_b_ms: float | None
    shift_ratio: float | None  # Hodges-Lehmann shift of B over A: +0.2 is 20 % slower
    shift_ms: float | None  # shift_ratio × median_a_ms
    p90_a_ms: float | None = None
    p90_b_ms: float | None = None
    p99_a_ms: float | None = None
    p99_b_ms: float | None = None
    p_value: float | None = None  # None: too few samples to test
    effect: float | None = None  # P(a sample of B is slower than one of A)
    significant: bool = False
    regression: bool = False
    improvement: bool = False


@dataclass
class Comparison:
    """Everything ``edgekit compare`` prints, as data (``asdict`` gives the JSON)."""

    a: dict[str, Any]  # {run_id, created_at, model, device, artifact}
    b: dict[str, Any]
    threshold: float
    alpha: float
    accuracy_drop: float
    latency: LatencyComparison | None
    accuracy_a: float | None = None
    accuracy_b: float | None = None
    accuracy_delta: float | None = None  # B - A, as a fraction (0.01 is one percentage point)
    size_a_bytes: int | None = None
    size_b_bytes: int | None = None
    size_ratio: float | None = None  # B / A - 1
    peak_rss_a_mib: float | None = None
    peak_rss_b_mib: float | None = None
    regressions: list[str] = field(default_factory=list)  # one line each; empty: no regression
    notes: list[str] = field(default_factory=list)

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["has_regression"] = self.has_regression
        return data


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def compare_latency(a_ms: Sequence[float], b_ms: Sequence[float], threshold: float = DEFAULT_THRESHOLD,
                    alpha: float = DEFAULT_ALPHA) -> LatencyComparison:
    """Compare two sets of raw latency samples: median shift, tail, and the U test."""
    a = np.asarray(a_ms, dtype=np.float64)
    b = np.asarray(b_ms, dtype=np.float64)
    med_a, med_b = _percentile(a, 50), _percentile(b, 50)
    ratio = relative_shift(a, b) if a.size and b.size else None
    shift = ratio * med_a if ratio is not None and med_a is not None else None
    result = LatencyComparison(
        n_a=int(a.size), n_b=int(b.size), median_a_ms=med_a, median_b_ms=med_b, shift_ratio=ratio, shift_ms=shift,
        p90_a_ms=_percentile(a, 90), p90_b_ms=_percentile(b, 90),
        p99_a_ms=_percentile(a, 99), p99_b_ms=_percentile(b, 99),
    )
    if a.size < MIN_SAMPLES or b.size < MIN_SAMPLES:
        return result
    test = mann_whitney_u(a, b)
    result.p_value, result.effect = test.p_value, test.effect
    result.significant = test.p_value < alpha
    if result.significant and ratio is not None:
        result.regression = ratio > threshold
        result.improvement = ratio < -threshold
    return result


def latency_drift(samples_ms: Sequence[float], fraction: float = 0.25,
                  alpha: float = DEFAULT_ALPHA) -> LatencyComparison | None:
    """The first ``fraction`` of a run's steady-state samples against its last: thermal drift.

    Positive ``shift_ratio`` means the run slowed down as it went on. None when there are too
    few samples to say.
    """
    values = list(samples_ms)
    k = int(len(values) * fraction)
    if k < MIN_SAMPLES:
        return None
    return compare_latency(values[:k], values[-k:], threshold=0.0, alpha=alpha)


def _identity(report: DeployReport) -> dict[str, Any]:
    return {"run_id": report.run_id, "created_at": report.created_at, "model": report.model,
            "device": report.device, "artifact": report.artifact.file,
            "format": report.artifact.format, "precision": report.artifact.precision}


def compare_reports(a: DeployReport, b: DeployReport, threshold: float = DEFAULT_THRESHOLD,
                    alpha: float = DEFAULT_ALPHA, accuracy_drop: float = DEFAULT_ACCURACY_DROP) -> Comparison:
    """Compare run B (new) against run A (baseline). Regressions are listed, never raised."""
    for report in (a, b):
        if not isinstance(report, DeployReport):
            raise UsageError(f"`compare` compares deploy runs; run {report.run_id} is a {report.kind} report",
                             "pass two deploy reports (files, run ids, or --last 2)")
    if threshold < 0 or not 0 < alpha < 1 or accuracy_drop < 0:
        raise UsageError("threshold and accuracy drop must be ≥ 0 and alpha in (0, 1)",
                         "e.g. --threshold 5 --alpha 0.05 --accuracy-drop 0.5")
    result = Comparison(a=_identity(a), b=_identity(b), threshold=threshold, alpha=alpha,
                        accuracy_drop=accuracy_drop, latency=None)
    _compare_context(a, b, result)
    if a.latency.samples_ms and b.latency.samples_ms:
        lat = compare_latency(a.latency.samples_ms, b.latency.samples_ms, threshold, alpha)
        result.latency = lat
        if lat.p_value is None:
            result.notes.append(f"too few latency samples to test ({lat.n_a} and {lat.n_b}; "
                                f"at least {MIN_SAMPLES} each)")
        elif lat.regression:
            result.regressions.append(
                f"latency: median {lat.median_a_ms:.3g} → {lat.median_b_ms:.3g} ms, "
                f"shift {lat.shift_ratio * 100:+.1f} % (p={lat.p_value:.2g}), over the {threshold * 100:g} % threshold")
        for name, report in (("A", a), ("B", b)):
            drift = latency_drift(report.latency.samples_ms, alpha=alpha)
            if drift and drift.significant and drift.shift_ratio is not None and abs(drift.shift_ratio) > threshold:
                result.notes.append(f"run {name} drifted {drift.shift_ratio * 100:+.1f} % from its first to its last "
                                    "quarter (clock or temperature): p-values are optimistic")
    else:
        result.notes.append("latency not compared: a run has no raw samples")
    _compare_accuracy(a, b, result)
    _compare_size(a, b, result)
    result.peak_rss_a_mib, result.peak_rss_b_mib = a.memory.peak_rss_mib, b.memory.peak_rss_mib
    return result


def _compare_context(a: DeployReport, b: DeployReport, result: Comparison) -> None:
    if a.device != b.device:
        result.notes.append(f"the runs are on different devices ({a.device} vs {b.device}): "
                            "a difference is not a regression of the model")
    if a.target.kind != b.target.kind:
        result.notes.append(f"the runs used different targets ({a.target.kind} vs {b.target.kind})")
    if a.model != b.model:
        result.notes.append(f"the runs are of different models ({a.model} vs {b.model})")
    for name, report in (("A", a), ("B", b)):
        if not report.latency.representative:
            result.notes.append(f"run {name}'s latency was measured on the host or under emulation")
    thread_a, thread_b = a.runtime.threads, b.runtime.threads
    if thread_a and thread_b and thread_a != thread_b:
        result.notes.append(f"the runs used different thread counts ({thread_a} vs {thread_b})")


def _compare_accuracy(a: DeployReport, b: DeployReport, result: Comparison) -> None:
    if a.accuracy is None or b.accuracy is None or a.accuracy.accuracy is None or b.accuracy.accuracy is None:
        return  # only top-1 accuracy is gated
    result.accuracy_a, result.accuracy_b = a.accuracy.accuracy, b.accuracy.accuracy
    result.accuracy_delta = b.accuracy.accuracy - a.accuracy.accuracy
    if (a.accuracy.dataset, a.accuracy.n) != (b.accuracy.dataset, b.accuracy.n):
        result.notes.append(f"accuracy measured on different data ({a.accuracy.dataset}, {a.accuracy.n} vs "
                            f"{b.accuracy.dataset}, {b.accuracy.n}): not gated")
        return
    if -result.accuracy_delta > result.accuracy_drop + 1e-12:  # exactly the allowed drop is allowed
        result.regressions.append(
            f"accuracy: {result.accuracy_a * 100:.2f} % → {result.accuracy_b * 100:.2f} % "
            f"({result.accuracy_delta * 100:+.2f} pp), more than the {result.accuracy_drop * 100:.2g} pp allowed")


def _compare_size(a: DeployReport, b: DeployReport, result: Comparison) -> None:
    result.size_a_bytes, result.size_b_bytes = a.artifact.size_bytes, b.artifact.size_bytes
    if not a.artifact.size_bytes:
        return
    result.size_ratio = b.artifact.size_bytes / a.artifact.size_bytes - 1.0
    if result.size_ratio > result.threshold:
        result.regressions.append(f"size: {a.artifact.size_bytes} → {b.artifact.size_bytes} bytes "
                                  f"({result.size_ratio * 100:+.1f} %), "
                                  f"over the {result.threshold * 100:g} % threshold")


# --- rendering ------------------------------------------------------------------------------------

def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _fmt_p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}"


def _fmt_ratio(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:+.1f} %"


def comparison_rows(c: Comparison) -> list[tuple[str, str, str, str]]:
    """(metric, A, B, change) rows shared by the text and Markdown renderings."""
    rows: list[tuple[str, str, str, str]] = []
    lat = c.latency
    if lat is not None:
        verdict = "regression" if lat.regression else "improvement" if lat.improvement else \
            "significant, under threshold" if lat.significant else "no significant change" \
            if lat.p_value is not None else "not tested"
        rows.append(("latency p50 (ms)", _fmt_ms(lat.median_a_ms), _fmt_ms(lat.median_b_ms),
                     f"shift {_fmt_ratio(lat.shift_ratio)} (p={_fmt_p(lat.p_value)}, {verdict})"))
        rows.append(("latency p90 (ms)", _fmt_ms(lat.p90_a_ms), _fmt_ms(lat.p90_b_ms), ""))
        rows.append(("latency p99 (ms)", _fmt_ms(lat.p99_a_ms), _fmt_ms(lat.p99_b_ms), ""))
        rows.append(("samples", str(lat.n_a), str(lat.n_b), ""))
    if c.accuracy_a is not None and c.accuracy_b is not None and c.accuracy_delta is not None:
        rows.append(("accuracy", f"{c.accuracy_a * 100:.2f} %", f"{c.accuracy_b * 100:.2f} %",
                     f"{c.accuracy_delta * 100:+.2f} pp"))
    if c.size_a_bytes is not None and c.size_b_bytes is not None:
        rows.append(("size (bytes)", f"{c.size_a_bytes:,}", f"{c.size_b_bytes:,}", _fmt_ratio(c.size_ratio)))
    if c.peak_rss_a_mib is not None and c.peak_rss_b_mib is not None:
        change = _fmt_ratio(c.peak_rss_b_mib / c.peak_rss_a_mib - 1) if c.peak_rss_a_mib else ""
        rows.append(("peak RSS (MiB)", f"{c.peak_rss_a_mib:.1f}", f"{c.peak_rss_b_mib:.1f}", change))
    return rows


def _run_label(run: dict[str, Any]) -> str:
    return f"{run['run_id']}  {run['created_at']}  {run['model']} → {run['device']}  {run['artifact']}"


def render_comparison_text(c: Comparison) -> str:
    """The comparison as plain text (what ``edgekit compare`` prints)."""
    rows = comparison_rows(c)
    width = max([len(r[0]) for r in rows] + [6])
    wa = max([len(r[1]) for r in rows] + [1])
    wb = max([len(r[2]) for r in rows] + [1])
    lines = [f"A  {_run_label(c.a)}", f"B  {_run_label(c.b)}", ""]
    lines.append(f"{'':<{width}}  {'A':>{wa}}  {'B':>{wb}}  change")
    lines += [f"{m:<{width}}  {va:>{wa}}  {vb:>{wb}}  {ch}".rstrip() for m, va, vb, ch in rows]
    lines.append("")
    if c.regressions:
        lines += [f"REGRESSION {line}" for line in c.regressions]
    else:
        lines.append(f"no regression (latency: significant at p<{c.alpha:g} and over {c.threshold * 100:g} %; "
                     f"accuracy: drop over {c.accuracy_drop * 100:.2g} pp; size: over {c.threshold * 100:g} %)")
    lines += [f"note: {note}" for note in c.notes]
    return "\n".join(lines)


def render_comparison_markdown(c: Comparison) -> str:
    """The comparison as a Markdown table, for a pull request comment."""
    verdict = "❌ regression" if c.regressions else "✅ no regression"
    lines = [f"### edgekit compare: {verdict}", ""]
    lines += [f"- **{name}** `{run['run_id']}` {run['created_at']} · {run['model']} → {run['device']} · "
              f"`{run['artifact']}`" for name, run in (("A", c.a), ("B", c.b))]
    lines += ["", "| metric | A | B | change |", "|---|--:|--:|---|"]
    lines += [f"| {m} | {va} | {vb} | {ch} |" for m, va, vb, ch in comparison_rows(c)]
    if c.regressions:
        lines += [""] + [f"- **{line}**" for line in c.regressions]
    if c.notes:
        lines += [""] + [f"> {note}" for note in c.notes]
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_ACCURACY_DROP",
    "DEFAULT_ALPHA",
    "DEFAULT_THRESHOLD",
    "Comparison",
    "LatencyComparison",
    "MannWhitneyResult",
    "compare_latency",
    "compare_reports",
    "hodges_lehmann",
    "latency_drift",
    "mann_whitney_u",
    "render_comparison_markdown",
    "relative_shift",
    "render_comparison_text",
]
