"""Per-operator profiles: ONNX Runtime's profiler after the timed runs; a note where none exists."""

from __future__ import annotations

import json
from pathlib import Path


def _run(runner, run_dir: Path, model: Path, fmt: str) -> dict:
    run_dir.mkdir(parents=True)
    job = {"schema_version": 1, "mode": "benchmark", "warmup": 1, "runs": 5, "model": str(model),
           "format": fmt, "threads": 1, "profile_ops": True, "profile_runs": 10}
    (run_dir / "job.json").write_text(json.dumps(job))
    assert runner.main([str(run_dir)]) == 0
    return json.loads((run_dir / "result.json").read_text())


def test_onnx_op_profile_ranks_real_nodes(runner, onnx_model: Path, tmp_path: Path) -> None:
    result = _run(runner, tmp_path / "run", onnx_model, "onnx")
    rows = result["op_profile"]
    assert rows, result["notes"]
    assert all(r["total_ms"] > 0 and r["count"] == 10 for r in rows)  # each node ran once per inference
    assert [r["total_ms"] for r in rows] == sorted((r["total_ms"] for r in rows), reverse=True)
    assert 0 < sum(r["percent"] for r in rows) <= 100.0 + 1e-6
    assert any(r["op"] in ("Conv", "FusedConv") for r in rows)
    assert len(result["samples_ms"]) == 5  # profiling came after, and on its own session
    assert not list((tmp_path / "run").glob("ort_profile*"))  # the profile file is removed


def test_tflite_has_no_profiler_and_says_so(runner, tflite_model: Path, tmp_path: Path) -> None:
    result = _run(runner, tmp_path / "run", tflite_model, "tflite")
    assert result["op_profile"] is None
    assert any("per-operator profile: not available" in note for note in result["notes"])
