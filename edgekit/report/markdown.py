"""A report as GitHub-flavoured Markdown, short enough for a pull request comment.

The headline numbers go in one table; the details (device state, settings, run identity) fold
into ``<details>`` blocks. ``edgekit compare --md`` uses ``compare.render_comparison_markdown``.
"""

from __future__ import annotations

import json
from typing import Any

from edgekit.report.compare import latency_drift
from edgekit.report.schema import CompressReport, DeployReport, ExportReport, Report, StepMetrics
from edgekit.report.text import human_bytes


def _cell(text: Any) -> str:
    """Table cell text: pipes and line breaks would break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ms(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.2f} %"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| **{_cell(k)}** | {_cell(v)} |" for k, v in rows]


def _details(summary: str, data: Any) -> list[str]:
    return ["", f"<details><summary>{summary}</summary>", "", "```json",
            json.dumps(data, indent=2, default=str), "```", "", "</details>"]


def _state_text(state: dict[str, Any]) -> str:
    parts = []
    if state.get("governor"):
        parts.append(f"governor {state['governor']}")
    if state.get("cur_freq_khz"):
        parts.append(f"{state['cur_freq_khz'] / 1000:.0f} MHz")
    if state.get("temperature_c") is not None:
        parts.append(f"{state['temperature_c']:.0f} °C")
    throttled = state.get("throttled")
    if isinstance(throttled, dict):
        now = [k for k, v in (throttled.get("now") or {}).items() if v] or list(throttled.get("flags") or [])
        parts.append("throttled: " + ", ".join(now) if now or throttled.get("any") else "not throttled")
    return " · ".join(parts) or "unknown"


def _deploy_rows(r: DeployReport) -> list[tuple[str, str]]:
    lat, mem, a = r.latency, r.memory, r.artifact
    rows: list[tuple[str, str]] = []
    if lat.samples_ms:
        line = (f"p50 **{_ms(lat.p50_ms)} ms** · p90 {_ms(lat.p90_ms)} · p99 {_ms(lat.p99_ms)} ms "
                f"(n={lat.n}; first {_ms(lat.first_ms)} ms, model load {_ms(lat.init_ms)} ms)")
        if not lat.representative:
            line += " ⚠️ not representative of the device"
        rows.append(("latency", line))
        if lat.throughput_ips:
            rows.append(("throughput", f"{lat.throughput_ips:.1f} inferences/s, one at a time"))
        drift = latency_drift(lat.samples_ms)
        if drift is not None and drift.shift_ratio is not None:
            verdict = "significant" if drift.significant else "not significant"
            rows.append(("drift", f"last quarter vs first: {drift.shift_ratio * 100:+.1f} % median "
                                  f"(p={drift.p_value:.2g}, {verdict})"))
    else:
        rows.append(("latency", "not measured"))
    if mem.peak_rss_mib is not None:
        line = f"peak {mem.peak_rss_mib:.1f} MiB"
        if mem.baseline_rss_mib is not None:
            line += f" (runtime {mem.baseline_rss_mib:.1f} MiB + model {mem.model_rss_mib:.1f} MiB)"
        rows.append(("memory", line))
    size = f"`{a.file}` {a.format}/{a.precision} {human_bytes(a.size_bytes)}"
    if a.reference_size_bytes and a.precision != "fp32":
        ratio = a.reference_size_bytes / max(a.size_bytes, 1)
        size += f" (fp32 {human_bytes(a.reference_size_bytes)}, {ratio:.1f}× smaller)"
    rows.append(("artifact", size))
    if r.accuracy is not None and r.accuracy.accuracy is None:
        rows.append((r.accuracy.metric, f"{r.accuracy.text} on {r.accuracy.dataset}"))
    elif r.accuracy is not None:
        acc = r.accuracy
        line = f"**{_pct(acc.accuracy)}** on {acc.dataset} ({acc.n} images)"
        if acc.reference_accuracy is not None:
            change = (acc.accuracy - acc.reference_accuracy) * 100
            line += f"; torch fp32 {_pct(acc.reference_accuracy)} ({change:+.2f} pp)"
        rows.append(("accuracy", line))
    if r.parity is not None:
        p = r.parity
        line = f"max|Δ| {p.max_abs_diff:.2g} vs {p.reference} ({p.n} inputs)"
        if p.top1_agreement is not None:
            line += f", top-1 agreement {_pct(p.top1_agreement)}"
        line += " ✅" if p.passed else f" ❌ over tolerance {p.tolerance:.2g}" if p.tolerance is not None else " ❌"
        rows.append(("parity", line))
    rows.append(("runtime", f"{r.runtime.name} {r.runtime.version or ''}, {r.runtime.threads or 'default'} threads"))
    machine = r.device_facts.get("board") or r.device_facts.get("machine") or "?"
    rows.append(("device", f"{machine}; before: {_state_text(r.state_before)}; after: {_state_text(r.state_after)}"))
    return rows


def _deploy(r: DeployReport) -> list[str]:
    lines = [f"### edgekit deploy: {r.model} → {r.device} ({r.target.kind} {r.target.address})", ""]
    lines += _table(_deploy_rows(r))
    if r.op_profile:
        lines += ["", "| op | name | total ms | % |", "|---|---|--:|--:|"]
        lines += [f"| {_cell(e.op)} | {_cell(e.name)} | {_ms(e.total_ms)} | {e.percent:.1f} |"
                  for e in sorted(r.op_profile, key=lambda e: e.total_ms, reverse=True)[:10]]
    lines += _warnings_and_notes(r)
    lines += _details("run details", {"run_id": r.run_id, "created_at": r.created_at,
                                      "edgekit_version": r.edgekit_version, "settings": r.settings,
                                      "device_facts": r.device_facts, "state_before": r.state_before,
                                      "state_after": r.state_after})
    return lines


def _export(r: ExportReport) -> list[str]:
    a = r.artifact
    rows = [("artifact", f"`{a.file}` {a.format}/{a.precision} {human_bytes(a.size_bytes)}")]
    if r.parity is not None:
        rows.append(("parity", f"max|Δ| {r.parity.max_abs_diff:.2g} vs {r.parity.reference} "
                               + ("✅" if r.parity.passed else "❌")))
    if r.accuracy is not None:
        figure = _pct(r.accuracy.accuracy) if r.accuracy.accuracy is not None else r.accuracy.text
        rows.append((r.accuracy.metric if r.accuracy.accuracy is None else "accuracy", f"{figure} on {r.accuracy.dataset}"))
    if r.export_seconds is not None:
        rows.append(("export time", f"{r.export_seconds:.1f} s"))
    return [f"### edgekit export: {r.model}", ""] + _table(rows) + _warnings_and_notes(r)


def _metrics(m: StepMetrics) -> tuple[str, str, str, str]:
    return (_pct(m.accuracy) if m.accuracy is not None else "–",
            human_bytes(m.deploy_size_bytes) if m.deploy_size_bytes is not None else "–",
            f"{m.params:,}" if m.params is not None else "–",
            _ms(m.latency_ms) if m.latency_ms is not None else "–")


def _compress(r: CompressReport) -> list[str]:
    lines = [f"### edgekit compress: {r.model}", ""]
    if r.dataset or r.latency_where:
        lines += [f"Accuracy on {r.dataset or '?'}; latency measured on {r.latency_where or '?'}.", ""]
    lines += ["| step | settings | accuracy | size | params | latency (ms) |", "|---|---|--:|--:|--:|--:|"]
    if r.baseline is not None:
        lines.append("| baseline | | " + " | ".join(_metrics(r.baseline)) + " |")
    for i, step in enumerate(r.steps, 1):
        settings = ", ".join(f"{k}={v}" for k, v in step.settings.items())
        lines.append(f"| {i}. {_cell(step.name)} | {_cell(settings)} | " + " | ".join(_metrics(step.after)) + " |")
    step_notes = [f"- {i}. {s.name}: {note}" for i, s in enumerate(r.steps, 1) for note in s.notes]
    if step_notes:
        lines += [""] + step_notes
    if r.candidates:
        lines += ["", "| candidate | accuracy | size | params | latency (ms) |", "|---|--:|--:|--:|--:|"]
        lines += [f"| {_cell(c.label)}{' (chosen)' if c.chosen else ''} | " + " | ".join(_metrics(c.metrics)) + " |"
                  for c in r.candidates]
    return lines + _warnings_and_notes(r)


def _warnings_and_notes(r: Report) -> list[str]:
    lines: list[str] = []
    if r.warnings:
        lines += [""] + [f"> ⚠️ {w}" for w in r.warnings]
    if r.notes:
        lines += [""] + [f"- {n}" for n in r.notes]
    return lines


def render_markdown(report: Report) -> str:
    """The report as Markdown (GitHub flavour)."""
    if isinstance(report, DeployReport):
        lines = _deploy(report)
    elif isinstance(report, CompressReport):
        lines = _compress(report)
    elif isinstance(report, ExportReport):
        lines = _export(report)
    else:
        raise TypeError(f"cannot render a {type(report).__name__} as Markdown")
    return "\n".join(lines) + "\n"


__all__ = ["render_markdown"]
