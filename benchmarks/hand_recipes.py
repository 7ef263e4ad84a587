"""The hand recipes of ``benchmarks/compression.py``, measured the way an ``edgekit optimize`` trial is.

Issue 14 asks that a study's Pareto front dominate every hand recipe: for each, a front point at least
as accurate, no slower and no larger. compression.py times its rows at the profile's 4 threads and
scores the torch model; a study times at 1 thread and scores the artifact in the device runtime. So
each hand row is rebuilt here as the same compression with the same settings (an edgekit recipe),
deployed exactly as a trial is (pi4 ``--emulate``, 1 thread, timed ≥ 1 s, the pi4 profile's first
format) and scored on all 10,000 test images in that runtime; the front's points carry their
full-set scores (``OptimizeResult.front_final``). The KD student row is left out: it is another
architecture, not a compression of the example.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from edgekit.errors import EdgekitError

STRUCTURED = {"structure": "channels", "ratio": 0.5, "scope": "layer"}
ONECYCLE_8 = {"epochs": 8, "lr": 3e-3, "schedule": "onecycle"}
# (label, recipe steps, precision): compression.py's section of the same name, its full (not --quick) budget
HAND_RECIPES: list[tuple[str, list[dict[str, Any]], str]] = [
    ("int8 PTQ", [], "int8"),
    ("int8 QAT (2 epochs, lr 1e-4)",
     [{"quantize": {"mode": "qat", "training": {"epochs": 2, "lr": 1e-4, "schedule": "cosine"}}}], "int8"),
    ("magnitude 80 % (3 rounds × 2 epochs)",
     [{"prune": {"ratio": 0.8, "scope": "global", "steps": 3,
                 "finetune": {"epochs": 2, "lr": 1e-3, "schedule": "cosine"}}}], "fp32"),
    ("structured 50 % taylor, 8 epochs",
     [{"prune": {**STRUCTURED, "importance": "taylor", "finetune": ONECYCLE_8}}], "fp32"),
    ("structured 50 % L1, 8 epochs",
     [{"prune": {**STRUCTURED, "importance": "magnitude", "finetune": ONECYCLE_8}}], "fp32"),
    ("structured 50 % taylor + 8 epochs KD",
     [{"prune": {**STRUCTURED, "importance": "taylor"}},
      {"distill": {"teacher": "original", "temperature": 4.0, "alpha": 0.9, "training": ONECYCLE_8}}], "fp32"),
    ("activation (APoZ) 50 %, 8 epochs",
     [{"prune": {**STRUCTURED, "importance": "activation", "statistic": "apoz", "finetune": ONECYCLE_8}}], "fp32"),
    ("k-means 16 + 1 epoch",
     [{"cluster": {"method": "kmeans", "clusters": 16,
                   "finetune": {"epochs": 1, "lr": 3e-4, "schedule": "cosine"}}}], "fp32"),
    ("log2 5 bits + 1 epoch", [{"cluster": {"method": "log2", "bits": 5, "finetune": {"epochs": 1, "lr": 3e-4}}}],
     "fp32"),
    ("SVD low-rank FC (rank 0.2) + 2 epochs",
     [{"low_rank": {"rank_ratio": 0.2, "layers": ["classifier.1"],
                    "finetune": {"epochs": 2, "lr": 1e-3, "schedule": "cosine"}}}], "fp32"),
    ("recipe: structured 50 % → 8 epochs → int8",
     [{"prune": {**STRUCTURED, "importance": "taylor"}}, {"finetune": ONECYCLE_8}], "int8"),
]


def measure_hand_recipes(work: Path, fmt: str = "tflite", progress: Any = print) -> list[dict[str, Any]]:
    """Each hand recipe deployed as a trial is: accuracy on the full test set, p50, size (or its error)."""
    from edgekit.deploy import deploy
    from edgekit.optimize.space import SearchSpace
    from edgekit.optimize.trial import TrialSettings, deploy_options, headline_metric

    # a trial's own settings (edgekit/optimize/trial.py), the full test set instead of the search slice
    settings = TrialSettings(model="example:fashion-cnn", device="pi4", folder=work, space=SearchSpace(exports=()),
                             data="example:fashion-mnist", eval_data="example:fashion-mnist", eval_limit=None,
                             emulate=True, threads=1, runs=100)
    rows = []
    for number, (label, steps, precision) in enumerate(HAND_RECIPES):
        folder = work / f"{number:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        recipe = None
        if steps:
            recipe = folder / "recipe.yaml"
            recipe.write_text(yaml.safe_dump(steps, sort_keys=False))
        options = deploy_options(settings, format=fmt, precision=precision, recipe=str(recipe) if recipe else None,
                                 recipe_data=settings.data if recipe else None, out_dir=str(folder / "artifact"))
        start = time.monotonic()
        row: dict[str, Any] = {"label": label, "steps": steps, "format": fmt, "precision": precision}
        try:
            report = deploy(settings.model, settings.device, options)
            metric, _name, samples = headline_metric(report)
        except EdgekitError as exc:
            row["error"] = exc.one_line()
        else:
            row.update(metric=metric, eval_samples=samples, latency_p50_ms=report.latency.p50_ms,
                       size_bytes=report.artifact.size_bytes)
        row["seconds"] = round(time.monotonic() - start, 1)
        progress(f"  hand: {label}: " + (row.get("error") or
                                        f"{row['metric'] * 100:.2f} %, p50 {row['latency_p50_ms']:.4f} ms, "
                                        f"{row['size_bytes'] / 1000:.1f} KB [{row['seconds']:.0f} s]"))
        rows.append(row)
    return rows


def dominating_point(hand: dict[str, Any], front: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first front point (``metric_full``, ``latency_p50_ms``, ``size_bytes``) at least as accurate as
    ``hand``, no slower and no larger; None if there is none."""
    for point in front:
        if (point["metric_full"] >= hand["metric"] and point["latency_p50_ms"] <= hand["latency_p50_ms"]
                and point["size_bytes"] <= hand["size_bytes"]):
            return point
    return None


def dominance_rows(hand_rows: list[dict[str, Any]], front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measured hand row with the front point that dominates it (or None) and ``dominated``."""
    out = []
    for hand in hand_rows:
        if "error" in hand:
            out.append({**hand, "dominated": None})
            continue
        point = dominating_point(hand, front)
        out.append({**hand, "dominated": point is not None, "by_trial": point["trial"] if point else None})
    return out


def print_dominance(rows: list[dict[str, Any]]) -> None:
    print(f"{'hand recipe':<44} {'full %':>7} {'p50 ms':>8} {'KB':>7}  dominated by")
    for r in rows:
        if "error" in r:
            print(f"{r['label']:<44} failed: {r['error']}")
            continue
        by = f"trial {r['by_trial']}" if r["dominated"] else "nothing on the front"
        print(f"{r['label']:<44} {r['metric'] * 100:>6.2f}% {r['latency_p50_ms']:>8.4f} "
              f"{r['size_bytes'] / 1000:>7.1f}  {by}")
