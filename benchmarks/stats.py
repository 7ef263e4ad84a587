"""Paired statistics for the benchmarks' "A beats B" targets (stdlib only: scipy is optional here).

A claim such as "KD gains at least +0.3 pt over the same student without it" is measured as
paired runs: seed i trains A and B on the same data, in the same order, and d_i = A_i − B_i. The
figure is the mean of the d_i with a two-sided 95 % Student-t confidence interval (n − 1 degrees
of freedom), and the target is met only when the *whole* interval clears the limit
(``target_met``): a mean above the limit with an interval that reaches below it is noise.

The t quantiles t(0.975, df) for df 1..30 are the standard table values (3 decimals, as printed in
any statistics text and returned by ``scipy.stats.t.ppf(0.975, df)``); above 30 the Cornish-Fisher
expansion around the normal quantile is within 0.001 of the exact value.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

CONFIDENCE = 0.95
_Z975 = 1.959964  # the standard normal's 0.975 quantile
# t(0.975, df), df = 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """The two-sided 95 % Student-t critical value t(0.975, df)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1 (got {df})")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975  # Cornish-Fisher: the t quantile as a series in 1/df around z
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Paired:
    """Mean of the paired differences A − B, their standard deviation, and the 95 % CI
    (``ci_low``/``ci_high`` are None with fewer than 2 pairs: no spread, no interval)."""

    n: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    differences: tuple[float, ...]
    confidence: float = CONFIDENCE

    def to_dict(self, digits: int = 3) -> dict[str, Any]:
        out = asdict(self)
        for key in ("mean", "sd", "ci_low", "ci_high"):
            if out[key] is not None:
                out[key] = round(out[key], digits)
        out["differences"] = [round(d, digits) for d in self.differences]
        return out

    def text(self, unit: str = "") -> str:
        if self.ci_low is None:
            return f"{self.mean:+.2f}{unit} (n {self.n}: no interval)"
        return f"{self.mean:+.2f}{unit}, 95 % CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}]{unit} (n {self.n} paired)"


def paired(a: Sequence[float], b: Sequence[float], scale: float = 1.0) -> Paired:
    """Statistics of ``scale · (a_i − b_i)``; ``a`` and ``b`` are the same seeds in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    if not a:
        raise ValueError("no pairs")
    diffs = tuple(scale * (x - y) for x, y in zip(a, b))
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Paired(1, mean, None, None, None, diffs)
    sd = statistics.stdev(diffs)  # n − 1 in the denominator
    half = t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return Paired(len(diffs), mean, sd, mean - half, mean + half, diffs)


def target_met(ci_low: float | None, ci_high: float | None, limit: float, at_least: bool) -> bool:
    """Met only if the whole interval clears ``limit``: ``ci_low >= limit`` for an at-least
    target, ``ci_high <= limit`` for an at-most one; never without an interval."""
    if ci_low is None or ci_high is None:
        return False
    if ci_low > ci_high:
        raise ValueError(f"interval [{ci_low}, {ci_high}] is reversed")
    return ci_low >= limit if at_least else ci_high <= limit


def wilson_interval(hits: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion ``hits / n`` (an agreement rate): sound near
    100 %, where the normal approximation is not."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = hits / n, _Z975 * _Z975
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half
