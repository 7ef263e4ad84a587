"""The terminal rendering of a deploy report (rich; plain text when not a TTY).

``verbose`` adds the report's ``details`` (notes marked for ``--verbose``: converter internals,
generic caveats; see :mod:`edgekit.notes`) after the notes.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgekit.report.schema import DeployReport
from edgekit.targets.registry import where_text


def human_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB"
    return f"{size / 1_000_000:.1f} MB"


def format_ms(value: float | None, missing: str = "?") -> str:
    """Milliseconds with as many decimals as a reader needs: 123 · 4.56 · 0.078."""
    if value is None:
        return missing
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _target_line(report: DeployReport) -> str:
    target = report.target
    return f"({where_text(target.kind, target.address, target.reproduced)})"


def _artifact_line(report: DeployReport) -> str:
    a = report.artifact
    line = f"{a.file}  {human_bytes(a.size_bytes)}"
    if a.reference_size_bytes and a.precision != "fp32":
        ratio = a.reference_size_bytes / max(a.size_bytes, 1)
        line += f" (fp32 {human_bytes(a.reference_size_bytes)}, {ratio:.1f}× smaller)"
    line += f"  sha256 {a.sha256[:8]}…"
    if a.chosen_because:
        line += f"\n           chosen: {a.chosen_because}"
    return line


def _latency_line(report: DeployReport) -> str:
    lat = report.latency
    line = (
        f"init {format_ms(lat.init_ms)} ms · first {format_ms(lat.first_ms)} ms · p50 {format_ms(lat.p50_ms)} ms"
        f" · p90 {format_ms(lat.p90_ms)} · p99 {format_ms(lat.p99_ms)} (n={lat.n})"
    )
    if not lat.representative:
        line += "  [not representative of the device]"
    return line


def _memory_line(report: DeployReport) -> str:
    mem = report.memory
    if mem.peak_rss_mib is None:
        return "not measured"
    line = f"peak {mem.peak_rss_mib:.1f} MiB"
    if mem.baseline_rss_mib is not None:
        line += f" (runtime baseline {mem.baseline_rss_mib:.1f} MiB)"
    return line


def _parity_line(report: DeployReport) -> str | None:
    p = report.parity
    if p is None:
        return None
    line = f"max|Δ| {p.max_abs_diff:.2g} vs {p.reference}"
    if p.top1_agreement is not None:
        line += f" · top-1 agreement {p.top1_agreement * 100:.1f} %"
    line += f" ({p.n} inputs)"
    if not p.passed:
        line += f"  [over tolerance {p.tolerance:.2g}]"
    return line


def _accuracy_line(report: DeployReport) -> str | None:
    acc = report.accuracy
    if acc is None:
        return None
    if acc.accuracy is None or acc.metric != "classification":
        return f"{acc.metric}: {acc.text or ''} on {acc.dataset}".replace(":  on", ": on")
    line = f"{acc.accuracy * 100:.2f} % on {acc.dataset}"
    if f"{acc.n:,}" not in acc.dataset and str(acc.n) not in acc.dataset:
        line += f" ({acc.n} images)"
    if acc.reference_accuracy is not None:
        line += f" (torch fp32 {acc.reference_accuracy * 100:.2f} %)"
    top5 = (acc.values or {}).get("top5")
    if top5 is not None:
        line += f" · top-5 {top5 * 100:.2f} %"
    return line


def _int8_modes_line(report: DeployReport) -> str | None:
    """Each int8 mode tried: size vs fp32, the metric on held-out calibration samples, host p50."""
    modes = ((report.artifact.manifest or {}).get("calibration") or {}).get("int8_modes")
    if not modes:
        return None
    parts = []
    for row in modes.get("rows", []):
        if row.get("status") != "ok":
            parts.append(f"{row['mode']} {row.get('status')}: {(row.get('error') or '')[:60]}")
            continue
        value = row.get("value")
        figure = "" if value is None else (f"{value * 100:.1f} %" if row.get("percent") else f"{value:.4g}")
        p50 = f" {row['p50_ms']:.3g} ms" if row.get("p50_ms") is not None else ""
        parts.append(f"{'✓ ' if row.get('chosen') else ''}{row['mode']} {row.get('size_ratio', 0):.2f}× "
                     f"{row.get('headline_text') or row.get('headline') or ''} {figure}{p50}".replace("  ", " "))
    return " · ".join(parts) + f" (on {modes.get('held_out_samples')} held-out samples, host 1 thread)"


def _data_line(report: DeployReport) -> str | None:
    data = getattr(report, "data", None) or {}
    if not data:
        return None
    parts = []
    if data.get("calibration"):
        parts.append(f"calibration {data['calibration']}")
    elif report.artifact.precision == "int8" and report.artifact.chosen_because != "deployed as given":
        parts.append("calibration: none")
    if data.get("evaluation"):
        parts.append(f"evaluation {data['evaluation']}")
    if data.get("parity"):
        parts.append(f"parity on {data['parity']}")
    return " · ".join(parts) or None


def _device_line(report: DeployReport) -> str:
    facts, state = report.device_facts, report.state_after or report.state_before
    parts = [str(facts.get("machine") or "?")]
    if facts.get("emulated_by"):
        parts.append(f"under {facts['emulated_by']}")
    parts.append(f"governor {state.get('governor') or 'unknown'}")
    if state.get("cur_freq_khz"):
        parts.append(f"{state['cur_freq_khz'] / 1000:.0f} MHz")
    temp = state.get("temperature_c")
    parts.append(f"{temp:.0f} °C" if temp is not None else "temperature unknown")
    throttled = state.get("throttled")
    if throttled is None:
        parts.append("throttling unknown")
    else:
        parts.append("throttled" if throttled.get("any") else "not throttled")
    return " · ".join(parts)


def _ops_line(report: DeployReport) -> str | None:
    ops = getattr(report, "op_profile", None) or []
    if not ops:
        return None
    return " · ".join(f"{row.op} {row.name} {row.percent:.0f} %".replace("  ", " ") for row in ops[:4])


def report_lines(report: DeployReport, verbose: bool = False) -> list[tuple[str, str]]:
    """(label, text) rows of the report; ``verbose`` adds its detail notes."""
    rows: list[tuple[str, str | None]] = [
        ("artifact", _artifact_line(report)),
        ("runtime", f"{report.runtime.name} {report.runtime.version or ''}, {report.runtime.threads or 'default'} threads"
         + (f" · {', '.join(report.runtime.providers)}" if report.runtime.providers else "")),
        ("latency", _latency_line(report)),
        ("memory", _memory_line(report)),
        ("parity", _parity_line(report)),
        ("accuracy", _accuracy_line(report)),
        ("data", _data_line(report)),
        ("int8 modes", _int8_modes_line(report)),
        ("top ops", _ops_line(report)),
        ("device", _device_line(report)),
    ]
    rows += [("warning", w) for w in report.warnings]
    rows += [("note", n) for n in report.notes]
    if verbose:
        rows += [("detail", n) for n in report.details]
    return [(k, v) for k, v in rows if v is not None]


def render_text(report: DeployReport, verbose: bool = False) -> str:
    """The report as plain text (what ``print_report`` shows, without colour)."""
    head = f"edgekit deploy  {report.model} → {report.device} {_target_line(report)}"
    body = "\n".join(f"{key:<10} {value}" for key, value in report_lines(report, verbose))
    return f"{head}\n{body}"


def print_report(report: DeployReport, console: Console | None = None, verbose: bool = False) -> None:
    """The report on the terminal (plain lines in logs and pipes); ``verbose`` adds its details."""
    console = console or Console()
    if not console.is_terminal:
        # logs and pipes get plain lines, never wrapped at rich's default 80 columns
        console.file.write(render_text(report, verbose) + "\n")
        return
    console.print(Text(f"edgekit deploy  {report.model} → {report.device} {_target_line(report)}", style="bold"))
    table = Table.grid(padding=(0, 1))
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    for key, value in report_lines(report, verbose):
        style = {"warning": "yellow", "detail": "dim"}.get(key, "")
        table.add_row(key, Text(value, style=style))
    console.print(table)
