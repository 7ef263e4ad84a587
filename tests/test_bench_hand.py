"""benchmarks/hand_recipes.py: the hand recipes are valid edgekit recipes, and the dominance rule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from edgekit.compress.recipe import parse_recipe

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "hand_recipes.py"
_spec = importlib.util.spec_from_file_location("edgekit_bench_hand", _PATH)
hand = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hand
_spec.loader.exec_module(hand)


def test_every_hand_recipe_is_an_edgekit_recipe() -> None:
    labels = [label for label, _steps, _precision in hand.HAND_RECIPES]
    assert len(labels) == len(set(labels))
    for label, steps, precision in hand.HAND_RECIPES:
        assert precision in ("fp32", "int8"), label
        if steps:
            assert len(parse_recipe(steps).steps) == len(steps), label


def point(trial: int, metric: float, p50: float, size: int) -> dict:
    return {"trial": trial, "metric_full": metric, "latency_p50_ms": p50, "size_bytes": size}


def test_a_hand_row_is_dominated_only_by_a_point_no_worse_on_all_three() -> None:
    row = {"label": "x", "metric": 0.90, "latency_p50_ms": 1.0, "size_bytes": 100}
    assert hand.dominating_point(row, [point(1, 0.90, 1.0, 100)])["trial"] == 1  # equal counts
    assert hand.dominating_point(row, [point(1, 0.91, 1.01, 50)]) is None  # slower
    assert hand.dominating_point(row, [point(1, 0.899, 0.5, 50)]) is None  # less accurate
    assert hand.dominating_point(row, [point(1, 0.95, 0.5, 101)]) is None  # larger
    front = [point(1, 0.95, 0.5, 101), point(2, 0.92, 0.9, 90)]
    rows = hand.dominance_rows([row, {"label": "y", "error": "export failed"}], front)
    assert rows[0]["dominated"] is True and rows[0]["by_trial"] == 2
    assert rows[1]["dominated"] is None  # a failed hand row is neither
