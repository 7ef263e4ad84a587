"""A report as one self-contained HTML page: inline CSS and SVG plots drawn here, no script, no fetch.

The page opens from a file, offline, in any browser, and can be attached to a ticket as is.
Plots (each an ``<svg class="plot">`` with a stable ``id``):

- ``latency-histogram``: the steady-state samples, with p50/p90/p99 marked;
- ``latency-timeline``: every inference in order, warm-up shaded, with a rolling median, so
  thermal drift or a slow start is visible;
- ``memory-bars``: the peak RSS split into runtime baseline and model, and its share of the
  device's memory;
- ``op-profile``: the top operators by time (only when the report has ``op_profile``);
- ``pareto-size`` and ``pareto-latency``: accuracy against size and latency for a compression
  report, with the Pareto front.

The report's JSON is embedded (``<script type="application/json" id="edgekit-report">``, data,
never executed), so the page alone is enough to reload or compare the run later.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgekit.outputs import write_text_atomic
from edgekit.report.compare import latency_drift
from edgekit.report.schema import CompressReport, DeployReport, ExportReport, Report, StepMetrics
from edgekit.report.text import format_ms, human_bytes
from edgekit.targets.registry import representative_kind

HISTOGRAM_MAX_BINS = 60
TIMELINE_MAX_POINTS = 1500  # more samples than this are drawn as per-bucket min-max bands
OP_PROFILE_TOP = 15


# --- formatting ---------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _ms(value: float | None) -> str:
    return format_ms(value, missing="–")


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _params(value: int | None) -> str:
    if value is None:
        return "–"
    if value >= 1_000_000:
        return f"{value / 1e6:.2f} M"
    if value >= 1_000:
        return f"{value / 1e3:.1f} k"
    return str(value)


def _throttle_text(throttled: Any) -> str:
    """The runner's ``throttled`` value ({raw, now, since_boot}) in words."""
    if throttled is None:
        return "unknown (no vcgencmd)"
    if not isinstance(throttled, dict):
        return str(throttled)
    now = [k for k, v in (throttled.get("now") or {}).items() if v]
    since = [k for k, v in (throttled.get("since_boot") or {}).items() if v]
    if throttled.get("any") and not now:
        now = list(throttled.get("flags") or ["yes"])
    parts = [("now: " + ", ".join(now)) if now else "not now"]
    if since:
        parts.append("since boot: " + ", ".join(since))
    return "; ".join(parts) + (f" ({throttled['raw']})" if throttled.get("raw") else "")


def _is_throttled(state: dict[str, Any]) -> bool:
    throttled = state.get("throttled")
    if not isinstance(throttled, dict):
        return False
    return bool(throttled.get("any")) or any((throttled.get("now") or {}).values())


# --- SVG plotting -----------------------------------------------------------------------------------

def _nice_step(span: float, count: int) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def _tick_format(step: float) -> Callable[[float], str]:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if str(step).rstrip("0").endswith("25") else 0)
    return lambda v: f"{v:.{decimals}f}"


class _Axis:
    """A linear map from data values to pixels, with round ticks."""

    def __init__(self, lo: float, hi: float, px0: float, px1: float, ticks: int = 5, nice: bool = True,
                 zero: bool = False) -> None:
        if zero:
            lo = min(lo, 0.0)
        if not hi > lo:
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        self.step = _nice_step(hi - lo, ticks)
        if nice:
            lo = math.floor(lo / self.step + 1e-9) * self.step
            hi = math.ceil(hi / self.step - 1e-9) * self.step
        self.lo, self.hi, self.px0, self.px1 = lo, hi, px0, px1
        self.format = _tick_format(self.step)

    def __call__(self, value: float) -> float:
        return self.px0 + (value - self.lo) / (self.hi - self.lo) * (self.px1 - self.px0)

    def ticks(self) -> list[float]:
        first = math.ceil(self.lo / self.step - 1e-9) * self.step
        count = int(math.floor((self.hi - first) / self.step + 1e-9)) + 1
        return [first + i * self.step for i in range(max(count, 0))]


class _Plot:
    """One SVG chart: a plotting area with axes, grid and labels; parts are appended as markup."""

    def __init__(self, width: int = 960, height: int = 300, left: int = 64, right: int = 20,
                 top: int = 16, bottom: int = 46) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, width - right, top, height - bottom
        self.parts: list[str] = []
        self.x: _Axis | None = None
        self.y: _Axis | None = None

    def set_axes(self, x: tuple[float, float], y: tuple[float, float], x_ticks: int = 8, y_ticks: int = 5,
                 y_zero: bool = False, x_nice: bool = True) -> None:
        self.x = _Axis(x[0], x[1], self.left, self.right, x_ticks, nice=x_nice)
        self.y = _Axis(y[0], y[1], self.bottom, self.top, y_ticks, zero=y_zero)

    def axes(self, x_label: str, y_label: str, x_format: Callable[[float], str] | None = None,
             y_format: Callable[[float], str] | None = None) -> None:
        assert self.x is not None and self.y is not None
        out = ['<g class="axis">']
        for value in self.y.ticks():
            py = self.y(value)
            out.append(f'<line class="grid" x1="{self.left}" x2="{self.right}" y1="{py:.1f}" y2="{py:.1f}"/>')
            out.append(f'<text x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">'
                       f'{_e((y_format or self.y.format)(value))}</text>')
        for value in self.x.ticks():
            px = self.x(value)
            out.append(f'<line class="tick" x1="{px:.1f}" x2="{px:.1f}" y1="{self.bottom}" y2="{self.bottom + 5}"/>')
            out.append(f'<text x="{px:.1f}" y="{self.bottom + 18}" text-anchor="middle">'
                       f'{_e((x_format or self.x.format)(value))}</text>')
        out.append(f'<line class="frame" x1="{self.left}" x2="{self.right}" y1="{self.bottom}" y2="{self.bottom}"/>')
        out.append(f'<line class="frame" x1="{self.left}" x2="{self.left}" y1="{self.top}" y2="{self.bottom}"/>')
        out.append(f'<text class="label" x="{(self.left + self.right) / 2:.0f}" y="{self.height - 6}" '
                   f'text-anchor="middle">{_e(x_label)}</text>')
        out.append(f'<text class="label" transform="translate(14 {(self.top + self.bottom) / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{_e(y_label)}</text>')
        out.append("</g>")
        self.parts[:0] = out  # under the data

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def svg(self, plot_id: str, title: str, description: str) -> str:
        return (f'<svg class="plot" id="{_e(plot_id)}" viewBox="0 0 {self.width} {self.height}" '
                f'role="img" aria-labelledby="{_e(plot_id)}-title {_e(plot_id)}-desc" '
                f'xmlns="http://www.w3.org/2000/svg">'
                f'<title id="{_e(plot_id)}-title">{_e(title)}</title>'
                f'<desc id="{_e(plot_id)}-desc">{_e(description)}</desc>'
                + "".join(self.parts) + "</svg>")


def _figure(svg: str, caption: str) -> str:
    return f'<figure>{svg}<figcaption>{caption}</figcaption></figure>'


def _latency_histogram(samples: Sequence[float], p50: float | None, p90: float | None,
                       p99: float | None) -> str:
    values = np.asarray(samples, dtype=np.float64)
    hi_clip = float(np.percentile(values, 99.5))
    top = float(values.max())
    clipped = 0
    if top > hi_clip * 1.25 and values.size >= 50:  # far outliers would squeeze the body of the plot
        clipped = int((values > hi_clip).sum())
        top = hi_clip
    lo = float(values.min())
    body = values[values <= top]
    q75, q25 = np.percentile(body, [75, 25])
    width = 2 * (q75 - q25) / body.size ** (1 / 3) if q75 > q25 else 0.0
    bins = int(np.clip(math.ceil((top - lo) / width), 12, HISTOGRAM_MAX_BINS)) if width > 0 else 12
    counts, edges = np.histogram(body, bins=bins, range=(lo, top) if top > lo else None)
    plot = _Plot(height=280)
    plot.set_axes((float(edges[0]), float(edges[-1])), (0, float(counts.max()) * 1.12), y_zero=True)
    assert plot.x is not None and plot.y is not None
    for count, left, right in zip(counts, edges[:-1], edges[1:]):
        if count == 0:
            continue
        x0, x1 = plot.x(float(left)), plot.x(float(right))
        y0 = plot.y(float(count))
        plot.add(f'<rect class="bar" x="{x0 + 0.5:.1f}" y="{y0:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
                 f'height="{plot.bottom - y0:.1f}"><title>{_ms(float(left))}–{_ms(float(right))} ms: '
                 f'{int(count)} samples</title></rect>')
    for name, value in (("p50", p50), ("p90", p90), ("p99", p99)):
        if value is None or not plot.x.lo <= value <= plot.x.hi:
            continue
        px = plot.x(value)
        right_half = px > (plot.left + plot.right) * 0.5
        label_y = plot.top + 12 + 14 * ("p50", "p90", "p99").index(name)
        plot.add(f'<line class="mark mark-{name}" x1="{px:.1f}" x2="{px:.1f}" y1="{plot.top}" y2="{plot.bottom}"/>'
                 f'<text class="mark-label" x="{px - 4 if right_half else px + 4:.1f}" y="{label_y}" '
                 f'text-anchor="{"end" if right_half else "start"}">{name} {_ms(value)} ms</text>')
    plot.axes("latency per inference (ms)", "samples")
    caption = f"{values.size} steady-state inferences in {bins} bins."
    if clipped:
        caption += (f" {clipped} sample{'s' if clipped > 1 else ''} above {_ms(top)} ms "
                    f"(up to {_ms(float(values.max()))} ms) {'are' if clipped > 1 else 'is'} not drawn.")
    return _figure(plot.svg("latency-histogram", "Latency histogram",
                            f"Distribution of {values.size} steady-state latencies; p50 {_ms(p50)} ms."),
                   _e(caption))


def _rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    if values.size < window or window < 2:
        return values.copy()
    windows = np.lib.stride_tricks.sliding_window_view(values, window)
    medians = np.median(windows, axis=1)
    pad_left = (window - 1) // 2
    return np.concatenate([np.full(pad_left, medians[0]), medians, np.full(window - 1 - pad_left, medians[-1])])


def _latency_timeline(report: DeployReport) -> str:
    warm = np.asarray(report.latency.warmup_ms, dtype=np.float64)
    steady = np.asarray(report.latency.samples_ms, dtype=np.float64)
    n_warm, n = warm.size, warm.size + steady.size
    both = np.concatenate([warm, steady])
    ceiling = float(np.percentile(steady, 99.5)) * 1.15
    if warm.size:
        ceiling = max(ceiling, float(np.median(warm)) * 1.1)
    ceiling = min(ceiling, float(both.max())) if both.max() > 0 else 1.0
    floor = float(both.min())
    plot = _Plot(height=300)
    plot.set_axes((0.5, n + 0.5), (floor - (ceiling - floor) * 0.05, ceiling), x_nice=False)
    assert plot.x is not None and plot.y is not None
    if n_warm:
        x1 = plot.x(n_warm + 0.5)
        plot.add(f'<rect class="warmup-zone" x="{plot.left}" y="{plot.top}" width="{x1 - plot.left:.1f}" '
                 f'height="{plot.bottom - plot.top}"/>'
                 f'<text class="zone-label" x="{plot.left + 4}" y="{plot.bottom - 6}">warm-up</text>')
    dots: list[str] = []

    def dot(index: int, value: float, css: str) -> None:
        px = plot.x(index + 1)  # type: ignore[misc]
        if value > ceiling:
            dots.append(f'<path class="{css} clipped" d="M{px - 3:.1f},{plot.top + 6} l3,-6 l3,6 z">'
                        f'<title>#{index + 1}: {_ms(value)} ms (off the chart)</title></path>')
        else:
            dots.append(f'<circle class="{css}" cx="{px:.1f}" cy="{plot.y(value):.1f}" r="1.8"/>')  # type: ignore[misc]

    for i, value in enumerate(warm):
        dot(i, float(value), "pt-warmup")
    if steady.size <= TIMELINE_MAX_POINTS:
        for i, value in enumerate(steady):
            dot(n_warm + i, float(value), "pt-steady")
    else:  # a band per bucket: min-max, so 10 000 samples stay a light page
        buckets = np.array_split(np.arange(steady.size), 500)
        for idx in buckets:
            lo_v, hi_v = float(steady[idx].min()), min(float(steady[idx].max()), ceiling)
            px = plot.x(n_warm + float(idx.mean()) + 1)
            dots.append(f'<line class="band" x1="{px:.1f}" x2="{px:.1f}" y1="{plot.y(lo_v):.1f}" '
                        f'y2="{plot.y(hi_v):.1f}"/>')
    plot.add('<g class="points">' + "".join(dots) + "</g>")
    if steady.size >= 10:
        window = max(5, steady.size // 25)
        trend = _rolling_median(steady, window)
        step = max(1, steady.size // 400)
        points = " ".join(f"{plot.x(n_warm + i + 1):.1f},{plot.y(min(float(v), ceiling)):.1f}"
                          for i, v in list(enumerate(trend))[::step])
        plot.add(f'<polyline class="trend" points="{points}"><title>rolling median of {window} '
                 f'inferences</title></polyline>')
    plot.axes("inference (in order; warm-up first)", "latency (ms)",
              x_format=lambda v: f"{v:.0f}")
    caption = [f"{n_warm} warm-up and {steady.size} timed inferences, in order."]
    if steady.size >= 10:
        caption.append("The line is a rolling median.")
    drift = latency_drift(list(steady))
    if drift is not None and drift.shift_ratio is not None:
        verdict = "significant" if drift.significant else "not significant"
        caption.append(f"Last quarter vs first quarter: {drift.shift_ratio * 100:+.1f} % median "
                       f"(p={drift.p_value:.2g}, {verdict}).")
    before, after = report.state_before, report.state_after
    if before.get("temperature_c") is not None or after.get("temperature_c") is not None:
        caption.append(f"Temperature {_num(before.get('temperature_c'))} °C before, "
                       f"{_num(after.get('temperature_c'))} °C after.")
    if before.get("cur_freq_khz") or after.get("cur_freq_khz"):
        caption.append(f"Clock {_mhz(before.get('cur_freq_khz'))} before, {_mhz(after.get('cur_freq_khz'))} after.")
    return _figure(plot.svg("latency-timeline", "Latency timeline",
                            "Every inference in order: warm-up, then steady state, with a rolling median."),
                   _e(" ".join(caption)))


def _mhz(khz: Any) -> str:
    return f"{khz / 1000:.0f} MHz" if isinstance(khz, (int, float)) and khz else "–"


def _memory_bars(report: DeployReport) -> str:
    mem = report.memory
    peak = mem.peak_rss_mib
    if peak is None:
        return "<p class=\"muted\">Memory was not measured.</p>"
    baseline = mem.baseline_rss_mib
    device_mib = report.profile.get("memory_mib") or _kib_to_mib(report.device_facts.get("memory_total_kib"))
    width, left, right = 960, 150, 940
    rows: list[tuple[str, list[tuple[str, float, str]], float]] = []
    if baseline is not None and peak >= baseline:
        rows.append(("peak RSS", [("seg-runtime", baseline, f"runtime {baseline:.1f} MiB"),
                                  ("seg-model", peak - baseline, f"model {peak - baseline:.1f} MiB")], peak))
    else:
        rows.append(("peak RSS", [("seg-model", peak, f"peak {peak:.1f} MiB")], peak))
    if device_mib:
        rows.append(("device memory", [("seg-used", peak, f"peak {peak:.1f} MiB"),
                                       ("seg-free", max(device_mib - peak, 0), f"rest of {device_mib:.0f} MiB")],
                     float(device_mib)))
    height = 26 + 44 * len(rows)
    parts = []
    for row, (label, segments, total) in enumerate(rows):
        y = 14 + row * 44
        parts.append(f'<text class="row-label" x="{left - 10}" y="{y + 17}" text-anchor="end">{_e(label)}</text>')
        x = float(left)
        for css, value, text in segments:
            w = (right - left) * value / total if total else 0
            parts.append(f'<rect class="{css}" x="{x:.1f}" y="{y}" width="{max(w, 0):.1f}" height="24">'
                         f'<title>{_e(text)}</title></rect>')
            if w > 90:
                parts.append(f'<text class="seg-label {css}-label" x="{x + 6:.1f}" y="{y + 16}">{_e(text)}</text>')
            x += w
    svg = (f'<svg class="plot" id="memory-bars" viewBox="0 0 {width} {height}" role="img" '
           f'aria-labelledby="memory-bars-title" xmlns="http://www.w3.org/2000/svg">'
           f'<title id="memory-bars-title">Memory</title>' + "".join(parts) + "</svg>")
    caption = f"Peak resident memory {peak:.1f} MiB"
    if baseline is not None:
        caption += f": {baseline:.1f} MiB for the runtime after import, {peak - baseline:.1f} MiB once the model ran"
    if device_mib:
        caption += f"; {peak / device_mib * 100:.1f} % of the device's {device_mib:.0f} MiB"
    return _figure(svg, _e(caption + "."))


def _kib_to_mib(kib: Any) -> float | None:
    return kib / 1024.0 if isinstance(kib, (int, float)) and kib else None


def _op_profile_chart(report: DeployReport) -> str:
    entries = sorted(report.op_profile, key=lambda e: e.total_ms, reverse=True)[:OP_PROFILE_TOP]
    width, left, right, row_h = 960, 300, 790, 22
    height = 12 + row_h * len(entries)
    longest = max(e.total_ms for e in entries) or 1.0
    parts = []
    for i, entry in enumerate(entries):
        y = 6 + i * row_h
        label = f"{entry.op} {entry.name}".strip()
        if len(label) > 42:
            label = label[:41] + "…"
        w = (right - left) * entry.total_ms / longest
        parts.append(f'<text class="row-label" x="{left - 8}" y="{y + 14}" text-anchor="end">{_e(label)}</text>'
                     f'<rect class="bar" x="{left}" y="{y}" width="{max(w, 0.5):.1f}" height="{row_h - 6}">'
                     f'<title>{_e(entry.op)} {_e(entry.name)}: {_ms(entry.total_ms)} ms over {entry.count} calls'
                     f'</title></rect>'
                     f'<text class="value-label" x="{left + w + 6:.1f}" y="{y + 13}">'
                     f'{_ms(entry.total_ms)} ms · {entry.percent:.1f} %</text>')
    svg = (f'<svg class="plot" id="op-profile" viewBox="0 0 {width} {height}" role="img" '
           f'aria-labelledby="op-profile-title" xmlns="http://www.w3.org/2000/svg">'
           f'<title id="op-profile-title">Top operators by time</title>' + "".join(parts) + "</svg>")
    return _figure(svg, _e(f"The {len(entries)} operators that take the most time "
                           f"(of {len(report.op_profile)} profiled)."))


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both axes (smaller x and higher y is better), by increasing x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _pareto_points(report: CompressReport, metric: str) -> list[tuple[str, float, float, str]]:
    """(label, x, accuracy %, css) for the baseline, each step's result, and each candidate."""
    scale = 1e-6 if metric == "deploy_size_bytes" else 1.0
    out: list[tuple[str, float, float, str]] = []

    def add(label: str, m: StepMetrics, css: str) -> None:
        x = getattr(m, metric)
        if x is not None and m.accuracy is not None:
            out.append((label, x * scale, m.accuracy * 100, css))

    if report.baseline is not None:
        add("baseline", report.baseline, "pt-baseline")
    for i, step in enumerate(report.steps, 1):
        add(f"{i}. {step.name}", step.after, "pt-final" if i == len(report.steps) else "pt-step")
    for cand in report.candidates:
        add(cand.label, cand.metrics, "pt-chosen" if cand.chosen else "pt-candidate")
    return out


def _place_labels(labels: Sequence[str], points: Sequence[tuple[float, float]],
                  bounds: tuple[float, float, float, float]) -> list[tuple[float, float, str]]:
    """(x, y, text-anchor) for each point's label, avoiding the labels and points already drawn."""
    left, top, right, bottom = bounds
    taken: list[tuple[float, float, float, float]] = [(px - 6, py - 6, px + 6, py + 6) for px, py in points]
    offsets = ((7, -7, "start"), (7, 16, "start"), (-7, -7, "end"), (-7, 16, "end"), (0, -12, "middle"),
               (0, 22, "middle"), (12, 4, "start"), (-12, 4, "end"))
    out = []
    for label, (px, py) in zip(labels, points):
        width = 6.8 * len(label) + 2
        choice = None
        for dx, dy, anchor in offsets:
            x0 = px + dx - (width if anchor == "end" else width / 2 if anchor == "middle" else 0)
            box = (x0, py + dy - 11, x0 + width, py + dy + 2)
            inside = box[0] >= left and box[2] <= right + 10 and box[1] >= top - 4 and box[3] <= bottom
            if inside and not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                choice = (px + dx, py + dy, anchor, box)
                break
        if choice is None:  # crowded: fall back to the first spot on the plot's side
            dx, dy, anchor = offsets[2] if px > (left + right) / 2 else offsets[0]
            choice = (px + dx, py + dy, anchor, (px, py, px, py))
        taken.append(choice[3])
        out.append(choice[:3])
    return out


def _pareto_plot(report: CompressReport, metric: str, plot_id: str, x_label: str) -> str:
    points = _pareto_points(report, metric)
    if len(points) < 2:
        return f'<p class="muted" id="{plot_id}-missing">Not enough points with both accuracy and ' \
               f'{_e(x_label.split(" (")[0])} for this plot.</p>'
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    span_x = (max(xs) - min(xs)) or max(xs) * 0.1 or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    plot = _Plot(width=470, height=340, left=56, right=14, bottom=46)
    plot.set_axes((min(xs) - span_x * 0.08, max(xs) + span_x * 0.08),
                  (min(ys) - span_y * 0.15, max(ys) + span_y * 0.15), x_ticks=5)
    assert plot.x is not None and plot.y is not None
    trail = [(x, y) for label, x, y, css in points if css in ("pt-baseline", "pt-step", "pt-final")]
    if len(trail) > 1:
        plot.add('<polyline class="trail" points="' + " ".join(f"{plot.x(x):.1f},{plot.y(y):.1f}" for x, y in trail)
                 + '"><title>the pipeline, step by step</title></polyline>')
    front = _pareto_front([(x, y) for _, x, y, _ in points])
    if len(front) > 1:
        coords = []
        for i, (x, y) in enumerate(front):  # a staircase: what is reachable at each size/latency
            if i:
                coords.append(f"{plot.x(x):.1f},{plot.y(front[i - 1][1]):.1f}")
            coords.append(f"{plot.x(x):.1f},{plot.y(y):.1f}")
        plot.add(f'<polyline class="front" points="{" ".join(coords)}"><title>Pareto front</title></polyline>')
    pixels = [(plot.x(x), plot.y(y)) for _, x, y, _ in points]
    placed = _place_labels([label for label, *_ in points], pixels, (plot.left, plot.top, plot.right, plot.bottom))
    for (label, x, y, css), (px, py), (lx, ly, anchor) in zip(points, pixels, placed):
        plot.add(f'<circle class="{css}" cx="{px:.1f}" cy="{py:.1f}" r="5"><title>{_e(label)}: '
                 f'{x:.4g}, {y:.2f} %</title></circle>'
                 f'<text class="pt-label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}">{_e(label)}</text>')
    plot.add(f'<text class="better" x="{plot.left + 6}" y="{plot.top + 14}">↖ better</text>')
    plot.axes(x_label, "accuracy (%)")
    return plot.svg(plot_id, f"Accuracy vs {x_label}", f"{len(points)} models; the staircase is the Pareto front.")


# --- page sections ----------------------------------------------------------------------------------

def _kv_table(rows: Iterable[tuple[str, Any]], css: str = "kv") -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_num(v))}</td></tr>" for k, v in rows)
    return f'<table class="{css}">{body}</table>'


def _card(label: str, value: str, sub: str = "", css: str = "") -> str:
    return (f'<div class="card {css}"><div class="card-label">{_e(label)}</div>'
            f'<div class="card-value">{_e(value)}</div><div class="card-sub">{_e(sub)}</div></div>')


def _section(title: str, body: str, section_id: str) -> str:
    return f'<section id="{_e(section_id)}"><h2>{_e(title)}</h2>{body}</section>'


def _list_block(items: Sequence[str], css: str) -> str:
    return f'<ul class="{css}">' + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>"


def _details(summary: str, data: Any) -> str:
    return (f"<details><summary>{_e(summary)}</summary><pre>{_e(json.dumps(data, indent=2, default=str))}"
            "</pre></details>")


def _deploy_cards(r: DeployReport) -> str:
    lat, acc, parity = r.latency, r.accuracy, r.parity
    cards = [
        _card("latency p50", f"{_ms(lat.p50_ms)} ms", f"p90 {_ms(lat.p90_ms)} · p99 {_ms(lat.p99_ms)} ms"),
        _card("throughput", f"{lat.throughput_ips:.1f} /s" if lat.throughput_ips else "–",
              "inferences, one at a time"),
        _card("first inference", f"{_ms(lat.first_ms)} ms", f"model load {_ms(lat.init_ms)} ms"),
        _card("peak memory", f"{r.memory.peak_rss_mib:.1f} MiB" if r.memory.peak_rss_mib is not None else "–",
              f"model {r.memory.model_rss_mib:.1f} MiB" if r.memory.model_rss_mib is not None else ""),
        _card("artifact", human_bytes(r.artifact.size_bytes), f"{r.artifact.format} {r.artifact.precision}"),
    ]
    if acc is not None and acc.accuracy is not None:
        ref = f"torch fp32 {_pct(acc.reference_accuracy)}" if acc.reference_accuracy is not None else acc.dataset
        cards.append(_card("accuracy", _pct(acc.accuracy), ref))
    elif acc is not None:
        cards.append(_card(acc.metric, acc.text or "–", acc.dataset))
    if parity is not None:
        cards.append(_card("parity max|Δ|", f"{parity.max_abs_diff:.2g}",
                           f"vs {parity.reference}" + ("" if parity.passed else " · over tolerance"),
                           "" if parity.passed else "bad"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _badges(r: Report) -> str:
    badges = []
    if isinstance(r, DeployReport):
        if not representative_kind(r.target.kind) or not r.latency.representative:
            badges.append(("warn", "latency not representative of the device"))
        if r.parity is not None:
            badges.append(("ok", "parity ok") if r.parity.passed else ("bad", "parity over tolerance"))
        if _is_throttled(r.state_after) or _is_throttled(r.state_before):
            badges.append(("bad", "throttled"))
    if r.warnings:
        badges.append(("warn", f"{len(r.warnings)} warning{'s' if len(r.warnings) != 1 else ''}"))
    return "".join(f'<span class="badge {css}">{_e(text)}</span>' for css, text in badges)


def _header(r: Report, title: str, where: str) -> str:
    meta = [r.created_at, f"run {r.run_id}"]
    if r.edgekit_version:
        meta.append(f"edgekit {r.edgekit_version}")
    meta.append(f"report schema v{r.schema_version}")
    return (f'<header><h1>{_e(title)}</h1><p class="where">{_e(where)}</p>'
            f'<p class="meta">{_e(" · ".join(meta))}</p><div class="badges">{_badges(r)}</div></header>')


def _warnings_section(r: Report) -> str:
    return _section("Warnings", _list_block(r.warnings, "warnings"), "warnings") if r.warnings else ""


def _latency_section(r: DeployReport) -> str:
    lat = r.latency
    if not lat.samples_ms:
        return _section("Latency", '<p class="muted">No latency samples in this report.</p>', "latency")
    stats = _kv_table([
        ("runtime import", f"{_ms(lat.import_ms)} ms"), ("model load", f"{_ms(lat.init_ms)} ms"),
        ("first inference", f"{_ms(lat.first_ms)} ms"),
        ("p50 / p90 / p99", f"{_ms(lat.p50_ms)} / {_ms(lat.p90_ms)} / {_ms(lat.p99_ms)} ms"),
        ("mean ± std", f"{_ms(lat.mean_ms)} ± {_ms(lat.std_ms)} ms"),
        ("min / max", f"{_ms(lat.min_ms)} / {_ms(lat.max_ms)} ms"),
        ("samples", f"{len(lat.samples_ms)} timed, {len(lat.warmup_ms)} warm-up"),
        ("representative", lat.representative),
    ])
    body = (_latency_histogram(lat.samples_ms, lat.p50_ms, lat.p90_ms, lat.p99_ms) + _latency_timeline(r)
            + stats)
    return _section("Latency", body, "latency")


def _state_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = ["governor", "cur_freq_khz", "max_freq_khz", "temperature_c", "throttled"]
    keys += [k for k in list(before) + list(after) if k not in keys]
    keys = list(dict.fromkeys(keys))
    names = {"cur_freq_khz": "clock", "max_freq_khz": "max clock", "temperature_c": "temperature (°C)"}

    def cell(key: str, state: dict[str, Any]) -> str:
        if not state:
            return "–"
        value = state.get(key)
        if key == "throttled":
            return _e(_throttle_text(value))
        if key.endswith("_khz"):
            return _e(_mhz(value))
        return _e(_num(value))

    rows = "".join(f"<tr><th>{_e(names.get(k, k))}</th><td>{cell(k, before)}</td><td>{cell(k, after)}</td></tr>"
                   for k in keys)
    return f'<table class="state"><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>'


def _device_section(r: DeployReport) -> str:
    facts = dict(r.device_facts)
    profile = r.profile
    description = f" — {profile['description']}" if profile.get("description") else ""
    rows: list[tuple[str, Any]] = [("profile", r.device + description),
                                   ("target", f"{r.target.kind} {r.target.address}")]
    if r.target.reproduced:
        rows.append(("reproduced", ", ".join(r.target.reproduced)))
    if r.target.not_reproduced:
        rows.append(("not reproduced", ", ".join(r.target.not_reproduced)))
    rows += [(k.replace("_", " "), v) for k, v in facts.items()]
    body = ('<div class="two-col"><div><h3>Facts</h3>' + _kv_table(rows) + "</div><div><h3>State</h3>"
            + _state_table(r.state_before, r.state_after) + "</div></div>")
    return _section("Device", body, "device")


def _quality_section(r: DeployReport | ExportReport) -> str:
    parts = []
    p = r.parity
    if p is not None:
        parts.append("<div><h3>Parity</h3>" + _kv_table([
            ("reference", p.reference), ("inputs", p.n), ("max |Δ|", f"{p.max_abs_diff:.3g}"),
            ("mean |Δ|", f"{p.mean_abs_diff:.3g}"),
            ("top-1 agreement", _pct(p.top1_agreement)),
            ("tolerance", f"{p.tolerance:.3g}" if p.tolerance is not None else None),
            ("passed", p.passed),
        ]) + "</div>")
    a = r.accuracy
    if a is not None and a.accuracy is None:
        parts.append(f"<div><h3>{_e(a.metric.capitalize())}</h3>" + _kv_table([
            ("data", a.dataset), ("samples", a.n), ("figures", a.text), ("measured", a.where),
        ]) + "</div>")
    elif a is not None:
        parts.append("<div><h3>Accuracy</h3>" + _kv_table([
            ("dataset", a.dataset), ("images", a.n), ("accuracy", _pct(a.accuracy)),
            ("torch fp32", _pct(a.reference_accuracy) if a.reference_accuracy is not None else None),
            ("change", f"{(a.accuracy - a.reference_accuracy) * 100:+.2f} pp"
             if a.reference_accuracy is not None else None),
            ("measured", a.where),
        ]) + "</div>")
    if not parts:
        return ""
    return _section("Parity and accuracy", '<div class="two-col">' + "".join(parts) + "</div>", "quality")


def _artifact_section(r: DeployReport | ExportReport | CompressReport) -> str:
    a = r.artifact
    if a is None:
        return ""
    rows: list[tuple[str, Any]] = [("file", a.file), ("format", a.format), ("precision", a.precision),
                                   ("size", f"{human_bytes(a.size_bytes)} ({a.size_bytes:,} bytes)")]
    if a.reference_size_bytes:
        rows.append(("fp32 size", f"{human_bytes(a.reference_size_bytes)} "
                                  f"({a.reference_size_bytes / max(a.size_bytes, 1):.1f}× larger)"))
    rows.append(("sha256", a.sha256))
    if a.chosen_because:
        rows.append(("chosen", a.chosen_because))
    if isinstance(r, DeployReport):
        rt = r.runtime
        rows.append(("runtime", f"{rt.name} {rt.version or ''}".strip()))
        rows.append(("threads", rt.threads))
        if rt.providers:
            rows.append(("providers", ", ".join(rt.providers)))
    body = _kv_table(rows)
    if a.manifest:
        body += _details("artifact manifest", a.manifest)
    if getattr(r, "settings", None):
        body += _details("settings", r.settings)
    if isinstance(r, DeployReport) and r.profile:
        body += _details("device profile", r.profile)
    return _section("Artifact", body, "artifact")


def _op_section(r: DeployReport) -> str:
    if not r.op_profile:
        return ""
    rows = "".join(f"<tr><td>{_e(e.op)}</td><td>{_e(e.name)}</td><td class=\"num\">{_ms(e.total_ms)}</td>"
                   f"<td class=\"num\">{e.count}</td><td class=\"num\">{e.percent:.1f}</td></tr>"
                   for e in sorted(r.op_profile, key=lambda e: e.total_ms, reverse=True)[:OP_PROFILE_TOP])
    table = ('<table class="grid-table"><tr><th>op</th><th>name</th><th>total ms</th><th>count</th>'
             f'<th>%</th></tr>{rows}</table>')
    return _section("Operators", _op_profile_chart(r) + table, "op-profile-section")


def _notes_section(r: Report) -> str:
    return _section("Notes", _list_block(r.notes, "notes"), "notes") if r.notes else ""


def _deploy_body(r: DeployReport) -> str:
    where = f"{r.model} → {r.device} ({r.target.kind} {r.target.address})"
    return (_header(r, "edgekit deploy", where) + _deploy_cards(r) + _warnings_section(r) + _latency_section(r)
            + _section("Memory", _memory_bars(r), "memory") + _quality_section(r) + _device_section(r)
            + _op_section(r) + _artifact_section(r) + _notes_section(r))


def _export_body(r: ExportReport) -> str:
    cards = [_card("artifact", human_bytes(r.artifact.size_bytes), f"{r.artifact.format} {r.artifact.precision}")]
    if r.parity is not None:
        cards.append(_card("parity max|Δ|", f"{r.parity.max_abs_diff:.2g}", f"vs {r.parity.reference}",
                           "" if r.parity.passed else "bad"))
    if r.export_seconds is not None:
        cards.append(_card("export time", f"{r.export_seconds:.1f} s"))
    return (_header(r, "edgekit export", r.model) + '<div class="cards">' + "".join(cards) + "</div>"
            + _warnings_section(r) + _quality_section(r) + _artifact_section(r) + _notes_section(r))


def _metric_change(before: Any, after: Any, fmt: Callable[[Any], str]) -> str:
    if before is None and after is None:
        return "–"
    return f"{fmt(before) if before is not None else '–'} → {fmt(after) if after is not None else '–'}"


def _compress_body(r: CompressReport) -> str:
    base, final = r.baseline, r.final
    cards = []
    if base is not None and final is not None:
        if final.accuracy is not None:
            delta = f"{(final.accuracy - base.accuracy) * 100:+.2f} pp" if base.accuracy is not None else ""
            cards.append(_card("accuracy", _pct(final.accuracy), f"from {_pct(base.accuracy)} {delta}".strip()))
        if final.deploy_size_bytes is not None:
            before, after = base.deploy_size_bytes, final.deploy_size_bytes
            ratio = f", {before / after:.1f}× smaller" if before and after else ""
            cards.append(_card("size", human_bytes(after), f"from {human_bytes(before)}{ratio}"))
        if final.latency_ms is not None:
            where = f" ({r.latency_where})" if r.latency_where else ""
            cards.append(_card("latency", f"{_ms(final.latency_ms)} ms", f"from {_ms(base.latency_ms)} ms{where}"))
        if final.params is not None:
            cards.append(_card("parameters", _params(final.params), f"from {_params(base.params)}"))
    head = ("<tr><th>#</th><th>step</th><th>settings</th><th>accuracy</th><th>size</th><th>params</th>"
            "<th>latency (ms)</th><th>time</th></tr>")
    rows = "".join(
        f"<tr><td>{i}</td><td>{_e(s.name)}</td><td>{_e(', '.join(f'{k}={v}' for k, v in s.settings.items()))}</td>"
        f"<td>{_e(_metric_change(s.before.accuracy, s.after.accuracy, _pct))}</td>"
        f"<td>{_e(_metric_change(s.before.deploy_size_bytes, s.after.deploy_size_bytes, human_bytes))}</td>"
        f"<td>{_e(_metric_change(s.before.params, s.after.params, _params))}</td>"
        f"<td>{_e(_metric_change(s.before.latency_ms, s.after.latency_ms, _ms))}</td>"
        f"<td>{_e(f'{s.seconds:.1f} s' if s.seconds is not None else '–')}</td></tr>"
        for i, s in enumerate(r.steps, 1))
    steps = f'<table class="grid-table">{head}{rows}</table>' if r.steps else '<p class="muted">No steps.</p>'
    step_notes = [f"{i}. {s.name}: {note}" for i, s in enumerate(r.steps, 1) for note in s.notes]
    if step_notes:
        steps += _list_block(step_notes, "notes")
    steps += ('<p class="caption">Size is the exported artifact\'s when a step produced one, else the raw bytes '
              "of the parameters.</p>")
    pareto = ('<div class="two-col">'
              + _pareto_plot(r, "deploy_size_bytes", "pareto-size", "size (MB)")
              + _pareto_plot(r, "latency_ms", "pareto-latency", "latency (ms)") + "</div>"
              + '<p class="caption">Each point is a model: the baseline, the result of each step in order (dashed '
              'trail) and any candidate tried. The staircase joins the models no other beats on both axes.'
              + (f" Accuracy on {_e(r.dataset)}." if r.dataset else "")
              + (f" Latency measured on {_e(r.latency_where)}." if r.latency_where else "") + "</p>")
    body = (_header(r, "edgekit compress", r.model) + '<div class="cards">' + "".join(cards) + "</div>"
            + _warnings_section(r) + _section("Steps", steps, "steps")
            + _section("Accuracy against size and latency", pareto, "pareto") + _artifact_section(r))
    if r.recipe:
        body += _section("Recipe", _details("recipe as run", r.recipe), "recipe")
    return body + _notes_section(r)


_CSS = """
:root { --fg:#1d2430; --muted:#5d6778; --bg:#ffffff; --panel:#f4f6f9; --line:#d9dee6; --accent:#2f6fdf;
  --accent2:#13a37f; --warm:#e08a1e; --bad:#c9302c; --warn:#b7791f; --ok:#23855a; --grid:#e6e9ef; }
@media (prefers-color-scheme: dark) { :root { --fg:#e4e8ee; --muted:#9aa4b2; --bg:#14181e; --panel:#1d232b;
  --line:#2f3742; --grid:#262d36; --accent:#6d9cf0; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
main { max-width:1080px; margin:0 auto; padding:24px 28px 48px; }
header h1 { margin:0; font-size:24px; } header .where { margin:4px 0 0; font-size:18px; }
.meta, .muted, figcaption, .caption, .card-sub { color:var(--muted); font-size:13px; }
.badge { display:inline-block; margin:6px 6px 0 0; padding:2px 9px; border-radius:10px; font-size:12px;
  border:1px solid currentColor; }
.badge.ok { color:var(--ok); } .badge.warn { color:var(--warn); } .badge.bad { color:var(--bad); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(135px,1fr)); gap:10px; margin:18px 0; }
.card { background:var(--panel); border-radius:8px; padding:10px 12px; }
.card.bad { outline:2px solid var(--bad); }
.card-label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card-value { font-size:22px; font-weight:600; margin:2px 0; }
section { margin-top:28px; } h2 { font-size:18px; border-bottom:1px solid var(--line); padding-bottom:4px; }
h3 { font-size:14px; margin:8px 0; color:var(--muted); }
figure { margin:12px 0 18px; } svg.plot { width:100%; height:auto; display:block; }
table { border-collapse:collapse; font-size:13px; margin:6px 0; }
th, td { text-align:left; padding:3px 12px 3px 0; vertical-align:top; }
table.kv th, table.state th { color:var(--muted); font-weight:500; white-space:nowrap; }
table.grid-table { width:100%; } table.grid-table th { border-bottom:1px solid var(--line); }
table.grid-table td { border-bottom:1px solid var(--grid); } td.num { text-align:right; }
td { overflow-wrap:anywhere; }
.two-col { display:grid; grid-template-columns:1fr 1fr; gap:24px; }
@media (max-width:760px) { .two-col { grid-template-columns:1fr; } }
ul.warnings li { color:var(--warn); } details { margin:8px 0; } summary { cursor:pointer; color:var(--muted); }
pre { background:var(--panel); padding:10px; border-radius:6px; overflow:auto; font-size:12px; max-height:420px; }
.axis text { fill:var(--muted); font-size:12px; } .axis .label { font-size:13px; }
.grid { stroke:var(--grid); } .tick, .frame { stroke:var(--line); }
.bar { fill:var(--accent); opacity:.85; } .bar:hover { opacity:1; }
.mark { stroke-width:1.5; stroke-dasharray:4 3; } .mark-p50 { stroke:var(--fg); }
.mark-p90 { stroke:var(--warm); } .mark-p99 { stroke:var(--bad); }
.mark-label, .zone-label, .pt-label, .row-label, .value-label { fill:var(--fg); font-size:12px; }
.warmup-zone { fill:var(--warm); opacity:.1; } .pt-warmup { fill:var(--warm); }
.pt-steady { fill:var(--accent); opacity:.6; }
.clipped { fill:var(--bad); } .band { stroke:var(--accent); opacity:.5; }
.trend { fill:none; stroke:var(--fg); stroke-width:2; }
.seg-runtime { fill:var(--muted); opacity:.55; } .seg-model { fill:var(--accent); } .seg-used { fill:var(--accent2); }
.seg-free { fill:var(--grid); } .seg-label { fill:#fff; font-size:12px; } .seg-label.seg-free-label { fill:var(--fg); }
.front { fill:none; stroke:var(--accent2); stroke-width:2; }
.trail { fill:none; stroke:var(--muted); stroke-dasharray:5 4; }
.pt-baseline { fill:var(--muted); } .pt-step { fill:var(--accent); }
.pt-final { fill:var(--accent2); stroke:var(--fg); }
.better { fill:var(--muted); font-size:12px; }
.pt-candidate { fill:none; stroke:var(--accent); stroke-width:1.5; } .pt-chosen { fill:var(--accent2); }
footer { margin-top:36px; color:var(--muted); font-size:12px; }
"""


def render_html(report: Report) -> str:
    """The report as a complete, self-contained HTML document (no network access needed)."""
    if isinstance(report, DeployReport):
        body, title = _deploy_body(report), f"edgekit deploy · {report.model} → {report.device}"
    elif isinstance(report, CompressReport):
        body, title = _compress_body(report), f"edgekit compress · {report.model}"
    elif isinstance(report, ExportReport):
        body, title = _export_body(report), f"edgekit export · {report.model}"
    else:
        raise TypeError(f"cannot render a {type(report).__name__} as HTML")
    data = report.model_dump_json().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f'<body><main class="report report-{_e(report.kind)}">{body}'
        f'<footer>Generated by edgekit from run {_e(report.run_id)}; the report JSON is embedded in this page.</footer>'
        f'</main><script type="application/json" id="edgekit-report">{data}</script></body></html>\n'
    )


def write_html(report: Report, path: str | Path) -> Path:
    """Write ``render_html(report)`` to ``path`` atomically (a temp file, then a rename)."""
    return write_text_atomic(path, render_html(report))


__all__ = ["render_html", "write_html"]
