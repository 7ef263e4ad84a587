"""A study's Pareto front as one self-contained HTML page.

Two scatter panels in inline SVG (metric against p50 latency, metric against artifact size), the
front as a table and the trials that failed or were skipped. No script, no font or stylesheet from
elsewhere: the page opens offline, attached to an issue or kept as a CI artifact.
"""

from __future__ import annotations

import html
import math
from typing import Callable, Sequence

from edgekit.optimize.budget import Budget, drop_pt
from edgekit.optimize.history import TrialRecord

W, H = 460, 300  # one panel, in SVG user units
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 14, 46
GREY, FRONT, BASE, STAR, LIMIT = "#9e9e9e", "#1f77b4", "#222222", "#d62728", "#e67e22"
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
svg{background:#fff;border:1px solid #ddd;margin:0 1em 1em 0}svg text{font-size:11px;fill:#444}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.cand{text-align:left}tr.recommended{background:#fdecea;font-weight:bold}.budget{color:#555}"""

Axis = tuple[float, float]  # (low, high) after padding, high > low


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _range(values: Sequence[float], pad: float = 0.08) -> Axis:
    """The values' span with a margin each side; one value (or all equal) gets a span of its own."""
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    margin = (hi - lo) * pad if hi > lo else abs(lo) * 0.1 or 1.0
    return (max(lo - margin, 0.0) if lo >= 0 else lo - margin), hi + margin


def _ticks(axis: Axis, count: int = 5) -> list[float]:
    """Round tick values inside ``axis`` (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    lo, hi = axis
    raw = (hi - lo) / count
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _px(value: float, axis: Axis, start: float, length: float) -> float:
    return start + (value - axis[0]) / (axis[1] - axis[0]) * length


def _tip(r: TrialRecord) -> str:
    """The point's tooltip: trial, candidate, metric, p50 and size."""
    kb = "?" if r.size_bytes is None else f"{r.size_bytes / 1000:.1f}"
    text = (f"trial {r.number}: {r.candidate.describe()} — {r.metric * 100:.2f} %, "
            f"p50 {r.latency_p50_ms:.4g} ms, {kb} KB")
    return f"<title>{_esc(text)}</title>"


def _star(x: float, y: float, outer: float = 9.0, inner: float = 4.0) -> str:
    pts = []
    for i in range(10):
        rad, ang = (outer if i % 2 == 0 else inner), math.pi / 5 * i - math.pi / 2
        pts.append(f"{x + rad * math.cos(ang):.1f},{y + rad * math.sin(ang):.1f}")
    return " ".join(pts)


def _panel(trials: Sequence[TrialRecord], front: Sequence[TrialRecord], baseline: TrialRecord,
           recommended: TrialRecord | None, x_of: Callable[[TrialRecord], float | None], x_title: str,
           y_title: str, x_limit: float | None, y_limit: float | None) -> str:
    """One scatter panel: metric (%) up, ``x_of`` across; trials, the front, baseline, recommended, budget lines."""

    def shown(r: TrialRecord | None) -> bool:
        return r is not None and r.ok and x_of(r) is not None

    points = [r for r in trials if shown(r)]
    marked = points + [r for r in (baseline, recommended) if shown(r)]
    xs = [x_of(r) for r in marked] + ([x_limit] if x_limit is not None else [])
    ys = [r.metric * 100 for r in marked] + ([y_limit] if y_limit is not None else [])
    xa, ya = _range(xs), _range(ys)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(r: TrialRecord) -> tuple[float, float]:
        return _px(x_of(r), xa, LEFT, pw), _px(r.metric * 100, ya, TOP + ph, -ph)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'role="img" aria-label="{_esc(y_title)} vs {_esc(x_title)}">',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>']
    for t in _ticks(xa):
        x = _px(t, xa, LEFT, pw)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{TOP + ph + 14}" text-anchor="middle">{t:.4g}</text>')
    for t in _ticks(ya):
        y = _px(t, ya, TOP + ph, -ph)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 8}" text-anchor="middle">{_esc(x_title)}</text>'
               f'<text transform="translate(14 {TOP + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{_esc(y_title)}</text>')
    dash = f'stroke="{LIMIT}" stroke-width="1.5" stroke-dasharray="6 4"'
    if x_limit is not None:
        x = _px(x_limit, xa, LEFT, pw)
        out.append(f'<line class="budget budget-x" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" {dash}>'
                   f'<title>budget: {x_limit:.4g}</title></line>')
    if y_limit is not None:
        y = _px(y_limit, ya, TOP + ph, -ph)
        out.append(f'<line class="budget budget-metric" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" '
                   f'{dash}><title>minimum metric: {y_limit:.2f} %</title></line>')
    for r in points:
        x, y = px(r)
        out.append(f'<circle class="trial" data-trial="{r.number}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
                   f'fill="{GREY}" fill-opacity="0.7">{_tip(r)}</circle>')
    on_front = sorted((r for r in front if shown(r)), key=lambda r: (x_of(r), -r.metric))
    if len(on_front) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(px, on_front))
        out.append(f'<polyline class="front-line" points="{line}" fill="none" stroke="{FRONT}" stroke-width="1.5"/>')
    for r in on_front:
        x, y = px(r)
        out.append(f'<circle class="front" data-trial="{r.number}" cx="{x:.1f}" cy="{y:.1f}" r="5" '
                   f'fill="{FRONT}">{_tip(r)}</circle>')
    if shown(baseline):
        x, y = px(baseline)
        out.append(f'<rect class="baseline" data-trial="{baseline.number}" x="{x - 5:.1f}" y="{y - 5:.1f}" '
                   f'width="10" height="10" fill="none" stroke="{BASE}" stroke-width="2">{_tip(baseline)}</rect>')
    if shown(recommended):
        out.append(f'<polygon class="recommended" data-trial="{recommended.number}" points="{_star(*px(recommended))}" '
                   f'fill="{STAR}" stroke="#fff">{_tip(recommended)}</polygon>')
    return "\n".join(out + ["</svg>"])


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _table(front: Sequence[TrialRecord], baseline: TrialRecord, recommended: TrialRecord | None) -> str:
    """The front as a table (plus the recommended trial if it is off the front), the recommended row marked."""
    rows = list(front)
    if recommended is not None and all(r.number != recommended.number for r in rows):
        rows.append(recommended)
    head = ("<tr><th>trial</th><th>candidate</th><th>metric %</th><th>drop pt</th><th>p50 ms</th>"
            "<th>p90 ms</th><th>KB</th><th>speed-up</th></tr>")
    body = []
    for r in rows:
        rec = recommended is not None and r.number == recommended.number
        drop = drop_pt(baseline.metric, r.metric) if baseline.metric is not None and r.metric is not None else None
        speed = (baseline.latency_p50_ms / r.latency_p50_ms
                 if baseline.latency_p50_ms and r.latency_p50_ms else None)
        mark = ' class="recommended"' if rec else ""
        body.append(f'<tr{mark}><td>{r.number}{" ★" if rec else ""}</td>'
                    f'<td class="cand">{_esc(r.candidate.describe())}</td>'
                    f'<td>{_num(None if r.metric is None else r.metric * 100, ".2f")}</td><td>{_num(drop, "+.2f")}</td>'
                    f'<td>{_num(r.latency_p50_ms, ".4g")}</td><td>{_num(r.latency_p90_ms, ".4g")}</td>'
                    f'<td>{_num(None if r.size_bytes is None else r.size_bytes / 1000, ".1f")}</td>'
                    f'<td>{_num(speed, ".2f")}{"×" if speed is not None else ""}</td></tr>')
    return f'<table class="front">\n{head}\n' + "\n".join(body) + "\n</table>"


def _failures(trials: Sequence[TrialRecord]) -> str:
    """The trials not plotted (failed, skipped by the estimator), each with its error or note."""
    items = []
    for r in trials:
        if r.ok:
            continue
        why = r.error or r.strategy_note or "no reason recorded"
        predicted = r.extra.get("predicted_p50_ms")
        if isinstance(predicted, (int, float)):
            why += f" (predicted p50 {predicted:.4g} ms)"
        items.append(f'<li class="{_esc(r.status)}">trial {r.number} ({_esc(r.status)}): '
                     f'{_esc(r.candidate.describe())} — {_esc(why)}</li>')
    if not items:
        return ""
    return "<h2>Not plotted</h2>\n<ul class=\"failures\">\n" + "\n".join(items) + "\n</ul>"


def front_html(trials: Sequence[TrialRecord], front: Sequence[TrialRecord], baseline: TrialRecord,
               recommended: TrialRecord | None, budget: Budget, title: str) -> str:
    """The whole page: title and budget, the two panels, the front's table, the trials not plotted."""
    min_metric = (baseline.metric * 100 - budget.max_drop_pt
                  if budget.max_drop_pt is not None and baseline.metric is not None else None)
    y_title = f"{baseline.metric_name or 'metric'} (%)"

    def panel(x_of: Callable[[TrialRecord], float | None], x_title: str, x_limit: float | None) -> str:
        return _panel(trials, front, baseline, recommended, x_of, x_title, y_title, x_limit, min_metric)

    latency = panel(lambda r: r.latency_p50_ms, "p50 latency (ms)", budget.max_latency_ms)
    size = panel(lambda r: None if r.size_bytes is None else r.size_bytes / 1000, "artifact size (KB)",
                 budget.max_size_kb)
    pick = (f"recommended: trial {recommended.number}, {_esc(recommended.candidate.describe())}"
            if recommended is not None else "no trial meets the budget")
    legend = (f'<p class="legend">grey: trials · <span style="color:{FRONT}">blue: Pareto front</span> · '
              f'□ baseline · <span style="color:{STAR}">★ recommended</span> · '
              f'<span style="color:{LIMIT}">dashed: budget</span></p>')
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_esc(title)}</title>\n'
            f'<style>{CSS}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n'
            f'<p class="budget">budget: {_esc(budget.describe())}</p>\n<p>{pick}</p>\n{legend}\n'
            f'<div class="panels">\n{latency}\n{size}\n</div>\n<h2>Pareto front</h2>\n'
            f'{_table(front, baseline, recommended)}\n{_failures(trials)}\n</body>\n</html>\n')


__all__ = ["front_html"]
