"""compare: a 20 % regression is flagged, a 1 % change under noise is not; accuracy and size too."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.report.compare import (
    compare_latency,
    compare_reports,
    hodges_lehmann,
    latency_drift,
    mann_whitney_u,
    relative_shift,
    render_comparison_markdown,
    render_comparison_text,
)
from edgekit.report.schema import AccuracySummary
from tests.report.builders import compress_report, deploy_report, latency_samples


def test_mann_whitney_by_hand() -> None:
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result.u == 0.0 and result.effect == 1.0  # every B larger than every A
    # mean 4.5, variance 3*3*7/12 = 5.25, continuity-corrected z = 4/sqrt(5.25)
    assert result.z == pytest.approx(-4 / 5.25 ** 0.5)
    assert result.p_value == pytest.approx(0.08085, abs=1e-4)
    same = mann_whitney_u([2.0] * 10, [2.0] * 12)
    assert same.p_value == 1.0 and same.effect == 0.5
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


@pytest.mark.parametrize("seed", range(4))
def test_mann_whitney_matches_scipy(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = np.round(rng.lognormal(np.log(4.0), 0.1, 150 + seed * 40), 2)  # rounding makes ties, as real timers do
    b = np.round(rng.lognormal(np.log(4.0 * (1 + 0.01 * seed)), 0.1, 120), 2)
    ours = mann_whitney_u(a, b)
    theirs = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    assert ours.u == pytest.approx(theirs.statistic)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)


@pytest.mark.parametrize(("n_a", "n_b"), [(1, 1), (3, 4), (200, 200), (201, 57)])
def test_hodges_lehmann_is_the_median_of_pairwise_differences(n_a: int, n_b: int) -> None:
    rng = np.random.default_rng(n_a)
    a = np.round(rng.normal(5.0, 1.0, n_a), 1)
    b = np.round(rng.normal(5.5, 1.0, n_b), 1)
    assert hodges_lehmann(a, b) == pytest.approx(float(np.median(b[:, None] - a[None, :])), abs=1e-9)


def test_relative_shift_of_scaled_samples() -> None:
    a = np.asarray(latency_samples(5, n=300))
    assert relative_shift(a, a * 1.2) == pytest.approx(0.2, rel=1e-6)
    assert relative_shift(a, a) == pytest.approx(0.0, abs=1e-9)


def test_p_values_are_calibrated_under_no_change() -> None:
    """Same distribution: about 5 % of comparisons are significant at alpha 0.05, no more."""
    rng = np.random.default_rng(1234)
    p_values = [mann_whitney_u(rng.lognormal(1.4, 0.1, 100), rng.lognormal(1.4, 0.1, 100)).p_value
                for _ in range(300)]
    rate = np.mean(np.asarray(p_values) < 0.05)
    assert 0.02 <= rate <= 0.09


@pytest.mark.parametrize("seed", range(10))
def test_a_20_percent_regression_is_flagged(seed: int) -> None:
    a = deploy_report(seed=seed)
    b = deploy_report(seed=seed + 100, median_ms=4.2 * 1.20)
    result = compare_reports(a, b)
    assert result.latency is not None and result.latency.regression
    assert result.latency.shift_ratio == pytest.approx(0.20, abs=0.04)
    assert result.latency.p_value is not None and result.latency.p_value < 1e-10
    assert result.has_regression and result.regressions[0].startswith("latency:")


def test_a_1_percent_change_under_noise_is_not_flagged() -> None:
    flagged = 0
    for seed in range(40):
        a = deploy_report(seed=seed, sigma=0.12)
        b = deploy_report(seed=seed + 500, sigma=0.12, median_ms=4.2 * 1.01)
        result = compare_reports(a, b)
        assert result.latency is not None
        flagged += result.has_regression
    assert flagged == 0


def test_significant_but_under_the_threshold_is_not_a_regression() -> None:
    a = latency_samples(1, median_ms=4.0, n=5000, sigma=0.05, spikes=0)
    b = latency_samples(2, median_ms=4.0 * 1.03, n=5000, sigma=0.05, spikes=0)
    result = compare_latency(a, b, threshold=0.05)
    assert result.significant and not result.regression
    assert compare_latency(a, b, threshold=0.02).regression


def test_an_improvement_is_not_a_regression() -> None:
    result = compare_reports(deploy_report(seed=1), deploy_report(seed=2, median_ms=4.2 * 0.8))
    assert result.latency is not None and result.latency.improvement and not result.has_regression


def test_too_few_samples_are_not_tested() -> None:
    result = compare_reports(deploy_report(seed=1, n=5), deploy_report(seed=2, n=5, median_ms=8.0))
    assert result.latency is not None and result.latency.p_value is None
    assert not result.has_regression
    assert any("too few latency samples" in note for note in result.notes)


def test_accuracy_drop_over_the_allowed_is_a_regression() -> None:
    a = deploy_report(seed=1, accuracy=0.9012)
    assert not compare_reports(a, deploy_report(seed=2, accuracy=0.8982)).has_regression  # -0.3 pp
    result = compare_reports(a, deploy_report(seed=2, accuracy=0.8912))  # -1.0 pp
    assert result.regressions == [r for r in result.regressions if r.startswith("accuracy:")]
    assert result.accuracy_delta == pytest.approx(-0.01)
    assert compare_reports(a, deploy_report(seed=2, accuracy=0.8912), accuracy_drop=0.02).regressions == []


def test_accuracy_on_different_data_is_not_gated() -> None:
    a = deploy_report(seed=1)
    b = deploy_report(seed=2, accuracy=0.5)
    b.accuracy = AccuracySummary(dataset="fashion-mnist test", n=500, accuracy=0.5)
    result = compare_reports(a, b)
    assert not result.has_regression and any("different data" in note for note in result.notes)


def test_size_growth_over_the_threshold_is_a_regression() -> None:
    result = compare_reports(deploy_report(seed=1, size_bytes=100_000), deploy_report(seed=2, size_bytes=110_000))
    assert result.size_ratio == pytest.approx(0.10)
    assert [r.split(":")[0] for r in result.regressions] == ["size"]


def test_context_differences_are_noted() -> None:
    b = deploy_report(seed=2, device="pi5")
    result = compare_reports(deploy_report(seed=1), b)
    assert any("different devices" in note for note in result.notes)


def test_drift_within_a_run() -> None:
    steady = latency_samples(3, n=400, drift=0.0, spikes=0)
    heating = latency_samples(3, n=400, drift=0.25, spikes=0)
    assert not latency_drift(steady).significant  # type: ignore[union-attr]
    drift = latency_drift(heating)
    assert drift is not None and drift.significant and drift.shift_ratio > 0.1  # type: ignore[operator]
    assert latency_drift(steady[:20]) is None
    result = compare_reports(deploy_report(seed=1, drift=0.25), deploy_report(seed=2, drift=0.0))
    assert any("run A drifted" in note for note in result.notes)


def test_only_deploy_reports_compare() -> None:
    with pytest.raises(UsageError, match="compress report"):
        compare_reports(deploy_report(), compress_report())  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        compare_reports(deploy_report(), deploy_report(), alpha=1.5)


def test_renderings() -> None:
    result = compare_reports(deploy_report(seed=1), deploy_report(seed=2, median_ms=5.04))
    text = render_comparison_text(result)
    assert "latency p50 (ms)" in text and "REGRESSION latency" in text
    md = render_comparison_markdown(result)
    assert md.startswith("### edgekit compare: ❌ regression") and "| latency p50 (ms) |" in md
    ok = render_comparison_markdown(compare_reports(deploy_report(seed=1), deploy_report(seed=2)))
    assert "✅ no regression" in ok
    data = result.to_dict()
    assert data["has_regression"] is True and data["latency"]["regression"] is True
