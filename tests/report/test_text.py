"""The terminal report: detail notes (``edgekit.notes``) only with --verbose."""

from __future__ import annotations

import io

from rich.console import Console

from edgekit.notes import Note, detail, is_detail, split_notes
from edgekit.report.text import print_report, render_text
from tests.report.builders import deploy_report

USER_NOTE = "int8 full-integer (PT2E): int8 per-channel weights, int8 activations, int8 inputs/outputs"
DETAIL_NOTE = "flatbuffer passes: names_dropped 23"


def test_notes_are_split_by_their_field_not_their_text() -> None:
    same_text = [Note(DETAIL_NOTE), detail(USER_NOTE)]
    shown, details = split_notes(same_text + ["a plain str is for every reader"])
    assert shown == [DETAIL_NOTE, "a plain str is for every reader"]
    assert details == [USER_NOTE]
    assert all(type(n) is str for n in shown + details)  # plain strings in the report
    assert is_detail(detail("x")) and not is_detail("x") and detail("x") == "x"


def test_text_report_shows_details_only_when_verbose() -> None:
    report = deploy_report(notes=[USER_NOTE], details=[DETAIL_NOTE])
    plain, verbose = render_text(report), render_text(report, verbose=True)
    assert f"note       {USER_NOTE}" in plain and DETAIL_NOTE not in plain
    assert f"note       {USER_NOTE}" in verbose and f"detail     {DETAIL_NOTE}" in verbose
    out = io.StringIO()
    print_report(report, Console(file=out, force_terminal=True, width=200), verbose=True)
    assert DETAIL_NOTE in out.getvalue()
    out = io.StringIO()
    print_report(report, Console(file=out, force_terminal=True, width=200))
    assert USER_NOTE in out.getvalue() and DETAIL_NOTE not in out.getvalue()


def test_details_round_trip_through_json() -> None:
    from edgekit.report.schema import DeployReport

    report = deploy_report(details=[DETAIL_NOTE])
    assert DeployReport.model_validate_json(report.to_json()).details == [DETAIL_NOTE]
