"""Read a report written by any edgekit version, upgrading it to the current schema.

Each schema change that older files need help with gets one function in ``_UPGRADES``, keyed by
the version it upgrades *from*; ``upgrade_report`` applies them in order. Reports never lose
data on the way: unknown keys are kept (the models allow extra fields).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from edgekit.errors import DataError
from edgekit.report.schema import REPORT_KINDS, REPORT_SCHEMA_VERSION, Report

OLDEST_SCHEMA_VERSION = 1


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had no run_id: derive a stable one from the content, so every load names it alike."""
    data = dict(data)
    data.setdefault("kind", "deploy")  # v1 only had deploy reports
    if not data.get("run_id"):
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        data["run_id"] = "v1" + hashlib.sha256(canonical.encode()).hexdigest()[:10]
    data.setdefault("op_profile", [])
    data["schema_version"] = 2
    return data


_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def upgrade_report(data: dict[str, Any], source: str = "the report") -> dict[str, Any]:
    """Return ``data`` (a report as parsed JSON) upgraded to ``REPORT_SCHEMA_VERSION``."""
    if not isinstance(data, dict):
        raise DataError(f"{source} is not an edgekit report (expected a JSON object, got {type(data).__name__})")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{source} is not an edgekit report: no integer schema_version",
                        "pass a file written by `edgekit deploy --report` or `--json`")
    if version > REPORT_SCHEMA_VERSION:
        raise DataError(f"{source} has report schema_version {version}; "
                        f"this edgekit reads up to {REPORT_SCHEMA_VERSION}", "upgrade edgekit to read it")
    if version < OLDEST_SCHEMA_VERSION:
        raise DataError(f"{source} has report schema_version {version}, older than any edgekit release")
    while version < REPORT_SCHEMA_VERSION:
        data = _UPGRADES[version](data)
        version = data["schema_version"]
    return data


def parse_report(data: dict[str, Any], source: str = "the report") -> Report:
    """Validate parsed JSON (of any supported version) into the report class of its ``kind``."""
    data = upgrade_report(data, source)
    kind = data.get("kind")
    cls = REPORT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DataError(f"{source} has an unknown report kind {kind!r}",
                        f"expected one of: {', '.join(REPORT_KINDS)}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DataError(f"{source} is not a valid {kind} report: {where}: {first['msg']}{more}") from None


def load_report(path: str | Path) -> Report:
    """Read a report JSON file written by any edgekit version into the current schema."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"report file not found: {path}",
                        "check the path, or name a recorded run by its id (see `edgekit runs`)") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the report {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}",
                        "pass a file written by `edgekit deploy --report`") from None
    return parse_report(data, source=str(path))


__all__ = ["OLDEST_SCHEMA_VERSION", "load_report", "parse_report", "upgrade_report"]
