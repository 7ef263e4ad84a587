"""Reports: the schema every command writes, statistics over raw samples, renderings."""

from __future__ import annotations

from edgekit.report.schema import REPORT_SCHEMA_VERSION, DeployReport
from edgekit.report.stats import latency_summary
from edgekit.report.text import print_report, render_text

__all__ = ["REPORT_SCHEMA_VERSION", "DeployReport", "latency_summary", "print_report", "render_text"]
