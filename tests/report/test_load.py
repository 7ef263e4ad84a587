"""One schema for every report kind; files from the previous schema version still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import DataError
from edgekit.report.load import load_report, parse_report, upgrade_report
from edgekit.report.schema import REPORT_SCHEMA_VERSION, CompressReport, DeployReport, ExportReport
from tests.report.builders import compress_report, deploy_report, export_report, op_profile

FIXTURES = Path(__file__).parent / "fixtures"
V1_FILE = FIXTURES / "deploy-v1.json"  # written by the first release's schema (schema_version 1)


def test_every_kind_round_trips_through_json(tmp_path: Path) -> None:
    for report in (deploy_report(op_profile=op_profile()), compress_report(), export_report()):
        path = tmp_path / f"{report.kind}.json"
        path.write_text(report.to_json())
        loaded = load_report(path)
        assert type(loaded) is type(report)
        assert loaded.model_dump() == report.model_dump()
        assert loaded.schema_version == REPORT_SCHEMA_VERSION


def test_all_raw_samples_are_kept() -> None:
    report = deploy_report(n=5000)
    loaded = parse_report(json.loads(report.to_json()))
    assert isinstance(loaded, DeployReport)
    assert loaded.latency.samples_ms == report.latency.samples_ms and len(loaded.latency.samples_ms) == 5000
    assert loaded.latency.warmup_ms == report.latency.warmup_ms


def test_a_v1_file_is_upgraded() -> None:
    raw = json.loads(V1_FILE.read_text())
    assert raw["schema_version"] == 1 and "run_id" not in raw and "op_profile" not in raw
    report = load_report(V1_FILE)
    assert isinstance(report, DeployReport)
    assert report.schema_version == REPORT_SCHEMA_VERSION
    assert report.op_profile == []
    assert report.run_id.startswith("v1") and len(report.run_id) == 12
    assert load_report(V1_FILE).run_id == report.run_id  # derived from the content: stable across loads
    assert report.latency.samples_ms == raw["latency"]["samples_ms"]  # nothing lost on the way
    assert report.accuracy is not None and report.accuracy.accuracy == raw["accuracy"]["accuracy"]


def test_upgrade_keeps_unknown_fields() -> None:
    data = json.loads(V1_FILE.read_text())
    data["lab_notebook"] = {"operator": "ada"}
    upgraded = upgrade_report(data)
    assert upgraded["lab_notebook"] == {"operator": "ada"}
    assert parse_report(data).model_dump()["lab_notebook"] == {"operator": "ada"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": REPORT_SCHEMA_VERSION + 1}, "upgrade edgekit"),
        ({"schema_version": 0}, "older than any edgekit release"),
        ({"schema_version": "2"}, "no integer schema_version"),
        ({"kind": "benchmark"}, "unknown report kind 'benchmark'"),
        ({"latency": {"samples_ms": "fast"}}, "latency.samples_ms"),
    ],
)
def test_bad_reports_are_data_errors(tmp_path: Path, change: dict, message: str) -> None:
    data = json.loads(deploy_report().to_json())
    data.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        load_report(path)
    assert message in info.value.one_line()
    assert "bad.json" in str(info.value)


def test_unreadable_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(DataError, match="is not JSON"):
        load_report(tmp_path / "garbage.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        load_report(tmp_path / "list.json")


def test_compress_report_shape() -> None:
    report = compress_report()
    assert isinstance(report, CompressReport)
    assert report.baseline is report.steps[0].before and report.final is report.steps[-1].after
    assert [s.name for s in report.steps] == ["structured_prune", "finetune", "quantize"]
    empty = CompressReport(model="m")
    assert empty.baseline is None and empty.final is None
    assert isinstance(parse_report(json.loads(export_report().to_json())), ExportReport)


def test_each_report_gets_its_own_run_id() -> None:
    assert deploy_report().run_id != deploy_report().run_id
