"""A study's history: one JSON line per finished trial, appended as each trial ends.

The file is the study's state. Rerunning the same command with the same ``--out`` reads it back
and every candidate already in it is reused instead of measured again, so an interrupted study
continues where it stopped (strategies are deterministic given their seed and the results so far,
so they propose the same candidates again and find them done). ``study.json`` holds what the
history's numbers depend on (model, device, data, search space, strategy, seed); a rerun that
changes any of them is refused rather than mixing incomparable trials. Budgets are not in it:
they only decide which trial is recommended.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgekit.errors import UsageError
from edgekit.optimize.space import Candidate
from edgekit.outputs import write_json_atomic, write_text_atomic

HISTORY_FILE = "history.jsonl"
STUDY_FILE = "study.json"


@dataclass
class TrialRecord:
    """What one trial measured. ``status`` is ``ok`` or ``failed`` (then ``error`` says why)."""

    number: int
    candidate: Candidate
    status: str = "ok"
    metric: float | None = None  # the headline metric on the search slice, in the device runtime (0..1)
    metric_name: str | None = None
    eval_samples: int | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    size_bytes: int | None = None
    peak_rss_mib: float | None = None
    artifact: str | None = None  # path relative to the study folder
    chosen_because: str | None = None
    seconds: float | None = None
    strategy_note: str | None = None  # why the strategy proposed it (netadapt: the step and target)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.metric is not None and self.latency_p50_ms is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidate"] = self.candidate.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialRecord":
        data = dict(data)
        data["candidate"] = Candidate.from_dict(data["candidate"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class History:
    """The trials of a study folder, in the order they finished; appends are flushed and fsynced."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / HISTORY_FILE
        self.records: list[TrialRecord] = list(self._load())
        self._by_key = {r.candidate.key(): r for r in self.records}

    def _load(self) -> Iterator[TrialRecord]:
        """The records in the file. A kill mid-write leaves a last line without its newline: it is
        removed from the file (so appends stay whole lines) and that trial reruns."""
        if not self.path.is_file():
            return
        text = self.path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
            write_text_atomic(self.path, text)
        lines = text.splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield TrialRecord.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                if n == len(lines):  # the last line, cut short by a kill mid-write: that trial reruns
                    return
                raise UsageError(f"{self.path} line {n} is not a trial record",
                                 "point --out at a fresh folder, or at one `edgekit optimize` wrote") from None

    def find(self, candidate: Candidate) -> TrialRecord | None:
        return self._by_key.get(candidate.key())

    def append(self, record: TrialRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._by_key[record.candidate.key()] = record

    def next_number(self) -> int:
        return max((r.number for r in self.records), default=-1) + 1


def check_study(folder: Path, study: dict[str, Any]) -> bool:
    """Write ``study.json`` for a new study; for an existing one, refuse a different study.

    Returns True when the folder already held this study (a resume).
    """
    path = Path(folder) / STUDY_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(study)):
            changed = sorted(k for k in set(old) | set(study) if old.get(k) != study.get(k))
            raise UsageError(f"{folder} holds a different study (changed: {', '.join(changed)})",
                             "rerun with the same settings to continue it, or pass another --out")
        return True
    if (Path(folder) / HISTORY_FILE).is_file():
        raise UsageError(f"{folder} has a history but no {STUDY_FILE}", "pass another --out")
    write_json_atomic(path, study)
    return False


__all__ = ["HISTORY_FILE", "History", "STUDY_FILE", "TrialRecord", "check_study"]
