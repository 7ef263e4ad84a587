"""Markdown for pull requests: one table of headline numbers, details folded away."""

from __future__ import annotations

from edgekit.report.markdown import render_markdown
from tests.report.builders import compress_report, deploy_report, export_report, op_profile


def table_rows(md: str) -> list[list[str]]:
    rows = []
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").replace("\\|", "\0").split("|")]
            rows.append([c.replace("\0", "|") for c in cells])
    return rows


def test_deploy_markdown() -> None:
    md = render_markdown(deploy_report(op_profile=op_profile()))
    assert md.startswith("### edgekit deploy: example:fashion-cnn → pi4 (ssh pi@raspberrypi.local:22)")
    rows = {r[0].strip("*"): r[1] for r in table_rows(md) if len(r) == 2}
    assert rows["latency"].startswith("p50 **4.")
    assert rows["parity"].startswith("max|Δ| 0.031")  # the pipe is escaped, the row still has two cells
    assert "90.12 %" in rows["accuracy"] and "3.7× smaller" in rows["artifact"]
    assert "61 °C" in rows["device"] and "1500 MHz" in rows["device"]
    assert "| Conv | /conv2/Conv |" in md
    assert "> ⚠️ CPU governor is 'ondemand'" in md
    assert "<details><summary>run details</summary>" in md and md.rstrip().endswith("</details>")
    assert all(len(r) in (2, 4) for r in table_rows(md))


def test_compress_and_export_markdown() -> None:
    md = render_markdown(compress_report())
    rows = table_rows(md)
    assert rows[1][:3] == ["baseline", "", "90.34 %"]
    assert rows[0] == ["step", "settings", "accuracy", "size", "params", "latency (ms)"]
    assert rows[2][0] == "1. structured_prune"
    assert rows[4] == ["3. quantize", "precision=int8", "89.96 %", "226 KB", "210,400", "2.40"]
    assert "ratio 0.7" in md
    assert "- 2. finetune: stopped early: validation accuracy stopped improving" in md
    md = render_markdown(export_report())
    assert "`fashion_cnn.fp16.onnx` onnx/fp16" in md and "✅" in md
