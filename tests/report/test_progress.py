"""Progress: bars on a terminal, plain lines in CI logs, nothing with --quiet; callable with a string."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from edgekit.report.progress import (
    NULL_PROGRESS,
    LineProgress,
    Progress,
    RichProgress,
    as_progress,
    format_amount,
    make_progress,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_tty_gives_plain_lines() -> None:
    stream = io.StringIO()
    progress = make_progress(stream=stream)
    assert isinstance(progress, LineProgress)
    progress("exporting onnx/int8")  # drops in where deploy expects Callable[[str], None]
    with progress.task("pushing model.onnx", total=3_400_000, unit="B") as task:
        task.update(1_000_000)
        task.update(3_400_000)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "· exporting onnx/int8"
    assert lines[1] == "· pushing model.onnx (3.4 MB)…"
    assert lines[-1].startswith("· pushing model.onnx: done, 3.4 MB in ")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()  # CI logs stay clean


def test_plain_lines_are_rate_limited_to_tenths() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = LineProgress(stream, interval_s=2.0, clock=clock)
    with progress.task("calibrating", total=200, unit="images") as task:
        for _ in range(200):
            clock.now += 0.1  # 20 s in all: at most one line per 2 s, one per tenth
            task.advance()
    lines = stream.getvalue().splitlines()
    middle = lines[1:-1]
    assert 3 <= len(middle) <= 9
    assert middle[0].startswith("  calibrating: ") and middle[0].endswith("%)")
    assert lines[-1] == "· calibrating: done, 200 images in 20.0 s"


def test_a_failed_task_says_so_and_reraises() -> None:
    stream = io.StringIO()
    progress = LineProgress(stream)
    with pytest.raises(RuntimeError), progress.task("fine-tuning", total=3, unit="epochs") as task:
        task.advance()
        raise RuntimeError("out of memory")
    assert "fine-tuning: stopped after" in stream.getvalue().splitlines()[-1]


def test_quiet_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    progress = make_progress(quiet=True, stream=TTY())
    assert progress is NULL_PROGRESS
    progress("nothing")
    with progress.task("nothing", total=10) as task:
        task.advance(5)
        task.update(10, total=10)
    assert capsys.readouterr() == ("", "")


def test_a_terminal_gets_rich_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert isinstance(make_progress(stream=TTY()), RichProgress)
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    progress = RichProgress(console)
    progress("pushing the runner")
    with progress.task("fine-tuning", total=2, unit="epochs") as epochs:
        for _ in range(2):
            with progress.task("epoch", total=50, unit="batches") as batches:
                batches.advance(50)
            epochs.advance()
    with progress.task("timing on pi4", unit="runs") as runs:  # unknown total
        runs.advance(200)
    out = console.file.getvalue()
    assert "pushing the runner" in out and "fine-tuning" in out and "2/2 epochs" in out and "200/200 runs" in out
    assert progress._bars is None  # the live display stopped with the last task


def test_as_progress_adapts_plain_callables() -> None:
    said: list[str] = []
    progress = as_progress(said.append)
    progress("exporting")
    with progress.task("pushing", total=10, unit="B") as task:
        task.advance(10)
    assert said == ["exporting", "pushing"]
    assert as_progress(None) is NULL_PROGRESS
    line = LineProgress(io.StringIO())
    assert as_progress(line) is line
    assert isinstance(NULL_PROGRESS, Progress)
    with pytest.raises(TypeError):
        as_progress(42)  # type: ignore[arg-type]


def test_amounts() -> None:
    assert format_amount(999, "B") == "999 B"
    assert format_amount(45_000, "B") == "45 KB"
    assert format_amount(3_400_000, "B") == "3.4 MB"
    assert format_amount(40, "images") == "40 images"
    assert format_amount(2.5, "epochs") == "2.5 epochs"
