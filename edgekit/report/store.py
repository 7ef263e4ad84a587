"""The local history of runs: one SQLite file, ``runs.sqlite``, in the project's ``.edgekit/``.

The directory is ``./.edgekit`` (the current directory's), or ``$EDGEKIT_HOME`` when set. Each
row keeps the whole report as JSON (raw samples included) plus the columns ``edgekit runs``
lists, so a run can be rendered or compared again later. Every call opens its own short
connection, so several edgekit processes can share a store.

Runs are named by their store id (1, 2, 3... in the order they were recorded) or by their
``run_id`` (or a unique prefix of it); ``resolve_run`` also accepts a report file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgekit.errors import DataError, UsageError
from edgekit.report.load import load_report, parse_report
from edgekit.report.schema import DeployReport, Report

STORE_FILE = "runs.sqlite"
STORE_SCHEMA_VERSION = 1  # of the SQLite tables (PRAGMA user_version), not of the reports
HOME_ENV = "EDGEKIT_HOME"

_CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    device TEXT,
    artifact TEXT,
    format TEXT,
    precision TEXT,
    size_bytes INTEGER,
    p50_ms REAL,
    accuracy REAL,
    schema_version INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_model_device ON runs (model, device);
"""


def edgekit_home() -> Path:
    """``$EDGEKIT_HOME`` when set, else ``.edgekit`` in the current directory."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.cwd() / ".edgekit"


def default_store_path() -> Path:
    return edgekit_home() / STORE_FILE


@dataclass(frozen=True)
class RunRecord:
    """One row of ``edgekit runs``."""

    id: int
    run_id: str
    created_at: str
    kind: str
    model: str
    device: str | None
    artifact: str | None
    format: str | None
    precision: str | None
    size_bytes: int | None
    p50_ms: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_COLUMNS = "id, run_id, created_at, kind, model, device, artifact, format, precision, size_bytes, p50_ms, accuracy"


def _columns(report: Report) -> dict[str, Any]:
    artifact = getattr(report, "artifact", None)
    latency = getattr(report, "latency", None)
    accuracy = getattr(report, "accuracy", None)
    if accuracy is None and getattr(report, "final", None) is not None:  # a compress report
        accuracy_value = report.final.accuracy  # type: ignore[union-attr]
    else:
        accuracy_value = accuracy.accuracy if accuracy is not None else None
    return {
        "run_id": report.run_id,
        "created_at": report.created_at,
        "kind": report.kind,
        "model": report.model,
        "device": getattr(report, "device", None),
        "artifact": artifact.file if artifact else None,
        "format": artifact.format if artifact else None,
        "precision": artifact.precision if artifact else None,
        "size_bytes": artifact.size_bytes if artifact else None,
        "p50_ms": latency.p50_ms if latency is not None else None,
        "accuracy": accuracy_value,
        "schema_version": report.schema_version,
        "report": report.model_dump_json(),
    }


class RunStore:
    """The runs recorded in one SQLite file (created on the first ``append``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    @contextlib.contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists() and not create:
            yield None
            return
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise DataError(f"cannot open the run store {self.path}: {exc}",
                            f"check the directory, or set {HOME_ENV} to a writable one") from None
        try:
            with conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    conn.executescript(_CREATE)
                    conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION}")
                elif version > STORE_SCHEMA_VERSION:
                    raise DataError(f"the run store {self.path} was written by a newer edgekit "
                                    f"(store version {version})", "upgrade edgekit, or set another EDGEKIT_HOME")
                yield conn
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot use the run store {self.path}: {exc}",
                            f"move it away, or set {HOME_ENV} to another directory") from None
        finally:
            conn.close()

    def append(self, report: Report) -> RunRecord:
        """Record a run; recording the same ``run_id`` again returns the existing row."""
        values = _columns(report)
        with self._connect(create=True) as conn:
            assert conn is not None
            row = conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (report.run_id,)).fetchone()
            if row is None:
                names = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                conn.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", tuple(values.values()))
                row = conn.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (report.run_id,)).fetchone()
        return RunRecord(*row)

    def list(self, model: str | None = None, device: str | None = None, kind: str | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """Recorded runs, newest last (``limit`` keeps the newest ones)."""
        where, args = _filters(model, device, kind)
        sql = f"SELECT {_COLUMNS} FROM runs{where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall() if conn is not None else []
        return [RunRecord(*row) for row in reversed(rows)]

    def get(self, ref: str | int) -> Report:
        """The report of a run named by store id, ``run_id``, or a unique ``run_id`` prefix."""
        text = str(ref).strip()
        with self._connect() as conn:
            rows: list[tuple[int, str, str]] = []
            if conn is not None:
                if text.isdigit():
                    rows = conn.execute("SELECT id, run_id, report FROM runs WHERE id = ?", (int(text),)).fetchall()
                if not rows and text:
                    pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                    rows = conn.execute("SELECT id, run_id, report FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
                                        "LIMIT 10", (pattern,)).fetchall()
        if not rows:
            raise DataError(f"no run {text!r} in {self.path}", "see `edgekit runs` for the recorded ids")
        if len(rows) > 1:
            raise UsageError(f"run id prefix {text!r} matches several runs: "
                             f"{', '.join(run_id for _, run_id, _ in rows)}", "give more characters")
        _, run_id, body = rows[0]
        return parse_report(json.loads(body), source=f"run {run_id} in {self.path}")

    def last(self, n: int, model: str | None = None, device: str | None = None,
             kind: str | None = "deploy") -> list[Report]:
        """The reports of the ``n`` newest matching runs, oldest first."""
        return [self.get(record.id) for record in self.list(model, device, kind, limit=n)]

    def last_two(self, n: int = 2, model: str | None = None,
                 device: str | None = None) -> tuple[DeployReport, DeployReport]:
        """The oldest and the newest of the ``n`` newest matching deploy runs (baseline, latest)."""
        if n < 2:
            raise UsageError(f"--last needs at least 2 runs, not {n}", "e.g. --last 2: the previous run and the latest")
        records = self.list(model, device, "deploy", limit=n)
        if len(records) < 2:
            which = " ".join(f"{k} {v}" for k, v in (("model", model), ("device", device)) if v)
            raise DataError(f"the run store has {len(records)} deploy run{'s' if len(records) != 1 else ''}"
                            f"{' for ' + which if which else ''}; compare needs 2",
                            f"run `edgekit deploy` again, or compare report files (store: {self.path})")
        return resolve_deploy_run(str(records[0].id), self), resolve_deploy_run(str(records[-1].id), self)


def _filters(model: str | None, device: str | None, kind: str | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in (("model", model), ("device", device), ("kind", kind)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def record_run(report: Report, store: RunStore | None = None) -> RunRecord:
    """Append a finished run to the local store (``$EDGEKIT_HOME`` or ``./.edgekit``)."""
    return (store or RunStore()).append(report)


def resolve_run(ref: str, store: RunStore | None = None) -> Report:
    """A report named on the command line: a JSON file, a store id, or a run_id (prefix)."""
    path = Path(ref)
    if path.suffix.lower() == ".json" or path.is_file():
        return load_report(path)
    return (store or RunStore()).get(ref)


def resolve_deploy_run(ref: str, store: RunStore | None = None) -> DeployReport:
    report = resolve_run(ref, store)
    if not isinstance(report, DeployReport):
        raise UsageError(f"{ref} is a {report.kind} report, not a deploy run")
    return report


__all__ = [
    "HOME_ENV",
    "RunRecord",
    "RunStore",
    "default_store_path",
    "edgekit_home",
    "record_run",
    "resolve_deploy_run",
    "resolve_run",
]
