"""``front_html``: the study's front as a self-contained HTML page, checked on recorded figures."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from edgekit.optimize import Budget, Candidate, TrialRecord, pareto_front
from edgekit.optimize.plot import front_html


def rec(n: int, metric: float, p50: float, size: int, cand: Candidate | None = None, status: str = "ok") -> TrialRecord:
    return TrialRecord(n, cand or Candidate(prune_ratio=n / 100), status=status, metric=metric,
                       latency_p50_ms=p50, latency_p90_ms=p50 * 1.1, size_bytes=size)


def study() -> tuple[list[TrialRecord], TrialRecord]:
    trials = [rec(0, 0.92, 0.10, 400_000, Candidate()), rec(1, 0.91, 0.05, 100_000), rec(2, 0.90, 0.06, 120_000),
              rec(3, 0.50, 0.02, 20_000)]
    failed = TrialRecord(4, Candidate(prune_ratio=0.75), status="failed", error="export <failed> & stopped")
    skipped = TrialRecord(5, Candidate(prune_ratio=0.625), status="skipped", strategy_note="estimator said slow",
                          extra={"predicted_p50_ms": 0.33})
    return trials + [failed, skipped], trials[0]


def svgs(page: str) -> list[ET.Element]:
    """Each <svg> element of the page, parsed as XML (a malformed one raises)."""
    found = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return [ET.fromstring(s) for s in found]


def with_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def page(budget: Budget = Budget(), recommended_number: int | None = 1, title: str = "study") -> str:
    trials, baseline = study()
    recommended = next((r for r in trials if r.number == recommended_number), None)
    return front_html(trials, pareto_front(trials), baseline, recommended, budget, title)


def test_two_wellformed_panels_with_one_marker_per_ok_trial() -> None:
    roots = svgs(page())
    assert len(roots) == 2
    for root in roots:
        assert sorted(int(e.get("data-trial")) for e in with_class(root, "trial")) == [0, 1, 2, 3]
        assert sorted(int(e.get("data-trial")) for e in with_class(root, "front")) == [0, 1, 3]  # 2 dominated
        assert [e.get("data-trial") for e in with_class(root, "baseline")] == ["0"]
        assert len(with_class(root, "front-line")) == 1
        texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
        assert any(t and "(%)" in t for t in texts)


def test_tooltips_describe_each_point() -> None:
    root = svgs(page())[0]
    circle = next(e for e in with_class(root, "trial") if e.get("data-trial") == "1")
    tip = circle.find("{http://www.w3.org/2000/svg}title").text
    assert tip == "trial 1: prune 0.01, onnx/fp32 — 91.00 %, p50 0.05 ms, 100.0 KB"


def test_recommended_is_starred_in_both_panels_and_the_table() -> None:
    html = page(recommended_number=1)
    for root in svgs(html):
        assert [e.get("data-trial") for e in with_class(root, "recommended")] == ["1"]
    rows = re.findall(r'<tr class="recommended">(.*?)</tr>', html)
    assert len(rows) == 1 and rows[0].startswith("<td>1 ★</td>")
    assert "recommended: trial 1" in html


def test_no_recommendation_draws_no_star() -> None:
    html = page(recommended_number=None)
    assert all(not with_class(root, "recommended") for root in svgs(html))
    assert 'class="recommended"' not in html
    assert "no trial meets the budget" in html


@pytest.mark.parametrize("budget, latency_lines, size_lines, metric_lines", [
    (Budget(), 0, 0, 0),
    (Budget(max_latency_ms=0.07), 1, 0, 0),
    (Budget(max_size_kb=150), 0, 1, 0),
    (Budget(max_drop_pt=1.5), 0, 0, 1),
    (Budget(max_latency_ms=0.07, max_size_kb=150, max_drop_pt=1.5), 1, 1, 1),
])
def test_budget_lines_only_where_the_budget_sets_them(budget: Budget, latency_lines: int, size_lines: int,
                                                      metric_lines: int) -> None:
    html = page(budget)
    latency, size = svgs(html)
    assert len(with_class(latency, "budget-x")) == latency_lines
    assert len(with_class(size, "budget-x")) == size_lines
    assert len(with_class(latency, "budget-metric")) == len(with_class(size, "budget-metric")) == metric_lines
    assert f"budget: {budget.describe()}" in html


def test_budget_line_sits_at_its_value() -> None:
    latency = svgs(page(Budget(max_latency_ms=0.07, max_drop_pt=1.5)))[0]
    line = with_class(latency, "budget-x")[0]
    fast, slow = (next(e for e in with_class(latency, "trial") if e.get("data-trial") == n) for n in ("1", "0"))
    assert float(fast.get("cx")) < float(line.get("x1")) < float(slow.get("cx"))  # 0.05 < 0.07 < 0.10 ms
    metric = with_class(latency, "budget-metric")[0]
    assert "90.50 %" in metric.find("{http://www.w3.org/2000/svg}title").text  # 92 % - 1.5 pt


def test_title_and_errors_are_escaped() -> None:
    html = page(title="<script>alert(1)</script> & co")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "export &lt;failed&gt; &amp; stopped" in html


def test_no_external_urls() -> None:
    html = page(Budget(max_latency_ms=0.07, max_size_kb=150, max_drop_pt=1.5))
    urls = re.findall(r"https?://[^\s\"'<>]*", html)
    assert urls and set(urls) == {"http://www.w3.org/2000/svg"}
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_failed_and_skipped_trials_are_listed_not_plotted() -> None:
    html = page()
    items = re.findall(r"<li[^>]*>(.*?)</li>", html)
    assert len(items) == 2
    assert items[0].startswith("trial 4 (failed)") and "export &lt;failed&gt; &amp; stopped" in items[0]
    assert items[1].startswith("trial 5 (skipped)") and "estimator said slow" in items[1]
    assert "predicted p50 0.33 ms" in items[1]
    for root in svgs(html):
        assert all(e.get("data-trial") not in ("4", "5") for e in root.iter())


def test_front_table_has_drop_and_speedup_against_the_baseline() -> None:
    html = page()
    row = re.search(r'<tr class="recommended">(.*?)</tr>', html).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells == ["1 ★", "prune 0.01, onnx/fp32", "91.00", "+1.00", "0.05", "0.055", "100.0", "2.00×"]
    assert len(re.findall(r"<tr[ >]", html)) == 1 + 3  # header + the front's three trials


def test_a_single_trial_that_is_baseline_and_recommended() -> None:
    only = rec(0, 0.92, 0.10, 400_000, Candidate())
    html = front_html([only], [only], only, only, Budget(), "one")
    for root in svgs(html):
        assert len(with_class(root, "trial")) == 1
        assert len(with_class(root, "recommended")) == len(with_class(root, "baseline")) == 1
        assert not with_class(root, "front-line")  # one point: nothing to join
        circle = with_class(root, "trial")[0]
        assert 0 < float(circle.get("cx")) < 460 and 0 < float(circle.get("cy")) < 300
    assert "<ul" not in html


def test_all_equal_values_and_recommended_off_the_front() -> None:
    trials = [rec(n, 0.9, 0.05, 1000) for n in range(3)]
    html = front_html(trials, trials[:1], trials[0], trials[2], Budget(max_drop_pt=0.0), "flat")
    for root in svgs(html):
        coords = {(e.get("cx"), e.get("cy")) for e in with_class(root, "trial")}
        assert len(coords) == 1 and "nan" not in str(coords)
    assert re.search(r'<tr class="recommended"><td>2 ★</td>', html)
