"""A NetAdapt study over the pi4 profile's own formats (TFLite and ONNX, int8 and fp32): int8 is
one of the knobs, chosen only if it measures faster. Slow: the int8 exports try every int8 mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.optimize import optimize

pytestmark = [pytest.mark.slow, pytest.mark.tflite]


def test_netadapt_measures_the_profiles_int8_exports(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    result = optimize("example:fashion-cnn", "pi4", out=tmp_path, data="example:fashion-mnist",
                      eval_data="example:fashion-mnist", emulate=True, eval_limit=200, final_eval_limit=200,
                      finetune_epochs=1, finetune_batches=5, prune_ratios=[0.5], prune_groups=[], threads=1, runs=20,
                      strategy="netadapt", trials=4, max_drop_pt=3.0)
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    cands = [r["candidate"] for r in rows]
    # the baseline is the profile's first format at fp32; without layer groups step 1 proposes the
    # global prune ratio, low-rank, then tflite/int8
    assert cands[0] == {"prune_ratio": 0.0, "low_rank": None, "format": "tflite", "precision": "fp32",
                        "layer_ratios": []}
    assert cands[3] == {"prune_ratio": 0.0, "low_rank": None, "format": "tflite", "precision": "int8",
                        "layer_ratios": []}
    base, int8 = rows[0], rows[3]
    assert int8["status"] == "ok", int8["error"]
    assert int8["size_bytes"] < 0.35 * base["size_bytes"]  # int8 weights: about a quarter of fp32
    assert "int8 mode" in int8["chosen_because"]  # the mode was chosen by measurement
    assert abs(int8["metric"] - base["metric"]) <= 0.03  # PTQ on the example costs next to nothing
    # within a 3 pt drop (on the full evaluation set) the recommendation is the most accurate re-scored trial
    base_full = result.baseline_final.metric
    within = [f.metric for f in result.front_final.values() if (base_full - f.metric) * 100 <= 3.0]
    assert result.recommended_final.metric == max(within)
    assert result.artifact.suffix in (".tflite", ".onnx") and result.artifact.is_file()
