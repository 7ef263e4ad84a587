"""Progress of long work (calibration, fine-tuning epochs, exports, pushes, timed runs).

One object is passed down the call chain; library code never decides how progress looks::

    def calibrate(model, batches, progress: Progress = NULL_PROGRESS):
        with progress.task("calibrating", total=len(batches), unit="batches") as task:
            for batch in batches:
                ...
                task.advance()
        progress.note("calibration done")        # or simply progress("calibration done")

Three implementations, chosen by ``make_progress``: rich bars on a terminal, plain lines when
stderr is not a terminal (CI logs: a start line, a line per 10 % at most every few seconds, a
done line with the elapsed time), and the null ``Progress()`` for ``--quiet``. All write to
stderr: stdout is for the report. A ``Progress`` is also callable with a string, so it drops in
where a ``Callable[[str], None]`` is expected; ``as_progress`` wraps such a callable back.

Units: ``unit="B"`` shows byte counts as KB/MB (pass ``task.update(done, total)`` straight from
an SFTP callback); any other unit is shown as a count ("40/200 images").
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import IO, Any, Callable, Iterator


class ProgressTask:
    """A running unit of work. The null task ignores everything."""

    def advance(self, n: float = 1) -> None:
        """``n`` more units done."""

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        """Set the units done so far (and the total, when it becomes known)."""


class Progress:
    """The progress interface, and its null implementation (silent)."""

    def __call__(self, message: str) -> None:
        self.note(message)

    def note(self, message: str) -> None:
        """A one-line message about what happens now ("exporting onnx/int8")."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[ProgressTask]:
        """A unit of work of ``total`` units (None: unknown) shown while the block runs."""
        yield ProgressTask()


NULL_PROGRESS = Progress()


def format_amount(value: float, unit: str) -> str:
    """``1234567, "B"`` → ``1.2 MB``; ``40, "images"`` → ``40 images``."""
    if unit == "B":
        if value < 1000:
            return f"{value:.0f} B"
        if value < 1_000_000:
            return f"{value / 1000:.0f} KB"
        return f"{value / 1_000_000:.1f} MB"
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{text} {unit}".rstrip()


def _format_count(completed: float, total: float | None, unit: str) -> str:
    if total is None:
        return format_amount(completed, unit)
    if unit == "B":
        return f"{format_amount(completed, unit)}/{format_amount(total, unit)}"
    return f"{format_amount(completed, '')}/{format_amount(total, unit)}"


def _format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


class _LineTask(ProgressTask):
    def __init__(self, owner: LineProgress, description: str, total: float | None, unit: str) -> None:
        self.owner, self.description, self.total, self.unit = owner, description, total, unit
        self.completed = 0.0
        self.started = owner.clock()
        self.last_line = self.started
        self.last_step = 0  # tenths of the total already reported

    def advance(self, n: float = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        with self.owner.lock:
            if total is not None:
                self.total = total
            if completed is not None:
                self.completed = completed
            if not self.total:
                return
            step = int(10 * min(self.completed / self.total, 1.0))
            now = self.owner.clock()
            if step > self.last_step and step < 10 and now - self.last_line >= self.owner.interval_s:
                self.last_step, self.last_line = step, now
                self.owner.write(f"  {self.description}: {_format_count(self.completed, self.total, self.unit)}"
                                 f" ({step * 10} %)")


class LineProgress(Progress):
    """Plain lines on a stream that is not a terminal (CI logs): no bars, no carriage returns."""

    def __init__(self, stream: IO[str] | None = None, interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.clock = clock
        self.lock = threading.RLock()

    def write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        with self.lock:
            stream.write(line + "\n")
            stream.flush()

    def note(self, message: str) -> None:
        self.write(f"· {message}")

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[ProgressTask]:
        size = f" ({format_amount(total, unit)})" if total is not None else ""
        self.write(f"· {description}{size}…")
        task = _LineTask(self, description, total, unit)
        try:
            yield task
        except BaseException:
            self.write(f"· {description}: stopped after {_format_seconds(self.clock() - task.started)}")
            raise
        if task.total is not None and task.completed >= task.total:
            done = format_amount(task.total, task.unit)
        else:
            done = _format_count(task.completed, task.total, task.unit) if task.completed or task.total else ""
        elapsed = _format_seconds(self.clock() - task.started)
        self.write(f"· {description}: done{', ' + done if done else ''} in {elapsed}")


class _RichTask(ProgressTask):
    def __init__(self, bars: Any, task_id: Any) -> None:
        self.bars, self.task_id = bars, task_id

    def advance(self, n: float = 1) -> None:
        self.bars.advance(self.task_id, n)

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        kwargs: dict[str, float] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self.bars.update(self.task_id, **kwargs)


class RichProgress(Progress):
    """Bars on a terminal (rich). One live display while any task runs; notes print above it."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.lock = threading.RLock()
        self._bars: Any = None
        self._open = 0

    def _make_bars(self) -> Any:
        from rich.progress import BarColumn, Progress as Bars, ProgressColumn, SpinnerColumn, TextColumn
        from rich.progress import TimeElapsedColumn, TimeRemainingColumn
        from rich.text import Text

        class CountColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                unit = task.fields.get("unit", "")
                return Text(_format_count(task.completed, task.total, unit), style="progress.download")

        return Bars(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), CountColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)

    def note(self, message: str) -> None:
        self.console.print(f"· {message}", highlight=False, markup=False)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[ProgressTask]:
        with self.lock:
            if self._bars is None:
                self._bars = self._make_bars()
                self._bars.start()
            bars = self._bars
            task_id = bars.add_task(description, total=total, unit=unit)
            self._open += 1
        try:
            yield _RichTask(bars, task_id)
            if total is None:  # an open-ended task shows as a full bar when done
                count = next(t.completed for t in bars.tasks if t.id == task_id)
                bars.update(task_id, total=max(count, 1), completed=max(count, 1))
        finally:
            with self.lock:
                self._open -= 1
                if self._open == 0:
                    bars.stop()
                    self._bars = None
                else:  # a nested task: drop its row, its parent is still running
                    bars.remove_task(task_id)


class _CallableProgress(Progress):
    """A plain ``Callable[[str], None]`` seen as a Progress: tasks become start/done notes."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def note(self, message: str) -> None:
        self.say(message)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[ProgressTask]:
        self.say(description)
        yield ProgressTask()


def as_progress(progress: Progress | Callable[[str], None] | None) -> Progress:
    """Whatever a caller passed as ``progress`` (None, a Progress, a callable), as a Progress."""
    if progress is None:
        return NULL_PROGRESS
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return _CallableProgress(progress)
    raise TypeError(f"progress must be a Progress or a callable taking a str, not {type(progress).__name__}")


def make_progress(quiet: bool = False, stream: IO[str] | None = None) -> Progress:
    """The progress for a command: null when quiet, bars on a terminal, lines otherwise."""
    if quiet:
        return NULL_PROGRESS
    stream = stream or sys.stderr
    is_tty = getattr(stream, "isatty", lambda: False)()
    if is_tty and os.environ.get("TERM") != "dumb":
        from rich.console import Console

        return RichProgress(Console(file=stream))
    return LineProgress(stream)


__all__ = ["NULL_PROGRESS", "LineProgress", "Progress", "ProgressTask", "RichProgress", "as_progress",
           "format_amount", "make_progress"]
