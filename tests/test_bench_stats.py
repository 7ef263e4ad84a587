"""benchmarks/stats.py: paired differences, the Student-t interval, and the "whole interval clears the limit" rule."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "stats.py"
_spec = importlib.util.spec_from_file_location("edgekit_bench_stats", _PATH)
stats = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = stats  # dataclasses look their module up there
_spec.loader.exec_module(stats)


def test_t_table_matches_the_textbook_values() -> None:
    # two-sided 95 % critical values, e.g. Student's t table in any statistics text
    assert stats.t_quantile(1) == 12.706
    assert stats.t_quantile(4) == 2.776  # 5 paired seeds
    assert stats.t_quantile(9) == 2.262
    assert stats.t_quantile(30) == 2.042
    # above the table: Cornish-Fisher, within 0.001 of the exact quantiles (t(0.975, 40) = 2.0211,
    # t(0.975, 120) = 1.9799), falling towards z = 1.96
    assert stats.t_quantile(40) == pytest.approx(2.0211, abs=1e-3)
    assert stats.t_quantile(120) == pytest.approx(1.9799, abs=1e-3)
    assert stats.t_quantile(31) < stats.t_quantile(30)
    with pytest.raises(ValueError, match="at least 1"):
        stats.t_quantile(0)


def test_t_quantiles_agree_with_scipy_where_installed() -> None:
    t = pytest.importorskip("scipy.stats").t
    for df in list(range(1, 31)) + [31, 45, 60, 200, 1000]:
        assert stats.t_quantile(df) == pytest.approx(t.ppf(0.975, df), abs=1e-3), df


def test_paired_interval_by_hand() -> None:
    kd = [0.9149, 0.9116, 0.9090, 0.9120, 0.9101]
    plain = [0.9089, 0.9088, 0.9084, 0.9080, 0.9095]
    result = stats.paired(kd, plain, scale=100)  # percentage points
    diffs = [100 * (a - b) for a, b in zip(kd, plain)]  # 0.60, 0.28, 0.06, 0.40, 0.06
    assert result.n == 5 and result.differences == pytest.approx(diffs)
    assert result.mean == pytest.approx(0.28)
    assert result.sd == pytest.approx(statistics.stdev(diffs))
    half = 2.776 * statistics.stdev(diffs) / math.sqrt(5)  # t(0.975, 4) · s / √n
    assert (result.ci_low, result.ci_high) == pytest.approx((0.28 - half, 0.28 + half))
    # a +0.28 pt mean whose interval (≈ [−0.01, +0.57]) holds 0: not even "better than without"
    assert result.ci_low < 0 < result.ci_high
    assert not stats.target_met(result.ci_low, result.ci_high, 0.3, at_least=True)
    assert not stats.target_met(result.ci_low, result.ci_high, 0.0, at_least=True)
    assert stats.target_met(result.ci_low, result.ci_high, -0.1, at_least=True)
    assert result.text(" pt") == f"+0.28 pt, 95 % CI [{0.28 - half:+.2f}, {0.28 + half:+.2f}] pt (n 5 paired)"
    assert result.to_dict()["mean"] == 0.28


def test_pairing_removes_shared_seed_variation() -> None:
    # seed-to-seed spread of 1 pt, a steady +0.5 pt gain: paired, the interval is tight and clears +0.4
    plain = [90.0, 91.0, 89.5, 90.7, 90.2]
    kd = [p + 0.5 + e for p, e in zip(plain, (0.02, -0.01, 0.0, 0.01, -0.02))]
    result = stats.paired(kd, plain)
    assert stats.target_met(result.ci_low, result.ci_high, 0.4, at_least=True)
    assert result.ci_high - result.ci_low < 0.1


def test_target_met_needs_the_whole_interval() -> None:
    assert stats.target_met(0.31, 0.9, 0.3, at_least=True)
    assert stats.target_met(0.3, 0.9, 0.3, at_least=True)  # on the limit counts
    assert not stats.target_met(0.29, 5.0, 0.3, at_least=True)  # a high mean does not rescue a low bound
    assert stats.target_met(-0.4, 0.9, 1.0, at_least=False)  # at most: the upper bound decides
    assert not stats.target_met(-0.4, 1.1, 1.0, at_least=False)
    assert not stats.target_met(None, None, 0.0, at_least=True)  # no interval, no claim
    with pytest.raises(ValueError, match="reversed"):
        stats.target_met(1.0, 0.0, 0.5, at_least=True)


def test_a_single_pair_has_no_interval_and_bad_input_is_refused() -> None:
    one = stats.paired([0.92], [0.91], scale=100)
    assert one.n == 1 and one.mean == pytest.approx(1.0) and one.ci_low is None and one.sd is None
    assert "no interval" in one.text()
    assert not stats.target_met(one.ci_low, one.ci_high, 0.0, at_least=True)
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no pairs"):
        stats.paired([], [])


def test_wilson_interval_matches_textbook_values() -> None:
    """Agreement rates get Wilson intervals (benchmarks/export.py): 0 of 10 and 50 of 100 as tabulated."""
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert stats.wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    low, high = stats.wilson_interval(340, 340)
    assert high == pytest.approx(1.0) and 0.98 < low < 1.0  # never past 100 %, unlike the normal interval
