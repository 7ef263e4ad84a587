"""Reports: the schema every command writes, statistics over raw samples, renderings, history.

Loading a report file goes through ``load_report`` (which upgrades older schema versions);
``RunStore`` is the local history ``edgekit runs`` lists and ``edgekit compare`` reads.
"""

from __future__ import annotations

from edgekit.report.compare import Comparison, compare_reports, mann_whitney_u
from edgekit.report.html import render_html, write_html
from edgekit.report.load import load_report, parse_report
from edgekit.report.markdown import render_markdown
from edgekit.report.progress import NULL_PROGRESS, Progress, as_progress, make_progress
from edgekit.report.schema import (
    REPORT_SCHEMA_VERSION,
    CandidateSummary,
    CompressReport,
    DeployReport,
    ExportReport,
    OpProfileEntry,
    Report,
    StepMetrics,
    StepSummary,
)
from edgekit.report.stats import latency_summary
from edgekit.report.store import RunRecord, RunStore, record_run, resolve_run
from edgekit.report.text import print_report, render_text

__all__ = [
    "NULL_PROGRESS",
    "REPORT_SCHEMA_VERSION",
    "CandidateSummary",
    "Comparison",
    "CompressReport",
    "DeployReport",
    "ExportReport",
    "OpProfileEntry",
    "Progress",
    "Report",
    "RunRecord",
    "RunStore",
    "StepMetrics",
    "StepSummary",
    "as_progress",
    "compare_reports",
    "latency_summary",
    "load_report",
    "make_progress",
    "mann_whitney_u",
    "parse_report",
    "print_report",
    "record_run",
    "render_html",
    "render_markdown",
    "render_text",
    "resolve_run",
    "write_html",
]
