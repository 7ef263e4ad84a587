"""The local run store: round trip, listing, naming runs, EDGEKIT_HOME."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgekit.errors import DataError, UsageError
from edgekit.report.store import RunStore, default_store_path, record_run, resolve_run
from tests.report.builders import compress_report, deploy_report, op_profile


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "home" / "runs.sqlite")


def test_round_trip(store: RunStore) -> None:
    report = deploy_report(op_profile=op_profile(), n=3000)
    record = store.append(report)
    assert record.id == 1 and record.run_id == report.run_id
    assert (record.model, record.device, record.artifact) == ("example:fashion-cnn", "pi4", "fashion_cnn.int8.onnx")
    assert record.p50_ms == pytest.approx(report.latency.p50_ms)
    assert record.accuracy == pytest.approx(0.9012)
    loaded = store.get(record.id)
    assert loaded.model_dump() == report.model_dump()  # every raw sample comes back
    assert store.get(report.run_id).model_dump() == report.model_dump()
    assert store.get(report.run_id[:5]).run_id == report.run_id


def test_listing_filters_and_order(store: RunStore) -> None:
    assert store.list() == []  # no file yet: nothing, and nothing created
    assert not store.path.exists()
    ids = [store.append(deploy_report(seed=i, device=device)).id
           for i, device in enumerate(["pi4", "pi5", "pi4", "pi4"])]
    store.append(compress_report())
    assert ids == [1, 2, 3, 4]
    assert [r.id for r in store.list()] == [1, 2, 3, 4, 5]  # oldest first
    assert [r.id for r in store.list(limit=2)] == [4, 5]  # the newest two
    assert [r.id for r in store.list(device="pi4")] == [1, 3, 4]
    assert [r.kind for r in store.list(kind="compress")] == ["compress"]
    assert store.list(kind="compress")[0].accuracy == pytest.approx(0.8996)  # the final step's
    a, b = store.last_two(2, device="pi4")
    assert (a.run_id, b.run_id) == (store.list()[2].run_id, store.list()[3].run_id)
    first, last = store.last_two(3)  # oldest and newest of the last 3 deploy runs
    assert (first.run_id, last.run_id) == (store.list()[1].run_id, store.list()[3].run_id)


def test_recording_twice_keeps_one_row(store: RunStore) -> None:
    report = deploy_report()
    assert store.append(report).id == store.append(report).id
    assert len(store.list()) == 1


def test_naming_errors(store: RunStore) -> None:
    with pytest.raises(DataError, match="no run '7'"):
        store.get(7)
    a, b = deploy_report(), deploy_report()
    a.run_id, b.run_id = "abc111111111", "abc222222222"
    store.append(a)
    store.append(b)
    with pytest.raises(UsageError, match="matches several runs"):
        store.get("abc")
    with pytest.raises(DataError, match="no run '5%'"):
        store.get("5%")  # LIKE wildcards are taken literally
    with pytest.raises(DataError, match="has 0 deploy runs for device pi9"):
        store.last_two(2, device="pi9")
    with pytest.raises(UsageError):
        store.last_two(1)


def test_edgekit_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEKIT_HOME", raising=False)
    assert default_store_path() == tmp_path / ".edgekit" / "runs.sqlite"
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "elsewhere"))
    record = record_run(deploy_report())
    assert (tmp_path / "elsewhere" / "runs.sqlite").is_file()
    assert not (tmp_path / ".edgekit").exists()
    assert resolve_run(str(record.id)).run_id == record.run_id


def test_resolve_run_reads_files(tmp_path: Path, store: RunStore) -> None:
    report = deploy_report()
    path = tmp_path / "run.json"
    path.write_text(report.to_json())
    assert resolve_run(str(path), store).run_id == report.run_id
    with pytest.raises(DataError, match="not found"):
        resolve_run(str(tmp_path / "missing.json"), store)


def test_a_corrupt_store_is_a_data_error(store: RunStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="cannot use the run store"):
        store.append(deploy_report())


def test_a_store_from_a_newer_edgekit_is_refused(store: RunStore) -> None:
    store.append(deploy_report())
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DataError, match="newer edgekit"):
        store.list()
