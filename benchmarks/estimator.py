"""Latency estimator (issue 14, M23): fitted on a few measured models, judged on held-out ones.

    python benchmarks/estimator.py [--models 24] [--fit 8] [--seed 0] [--formats tflite,onnx]

Architectures: the example CNN's layout (``edgekit.examples.fashion_cnn.FashionCNN``) at seeded
random widths (conv channels 4-96, hidden 32-256; random weights: latency does not depend on
them), each exported fp32 to every format and timed by the runner's own loop (its session,
1 thread, at least 1 s of calls, median) on this host, which is one device: the estimator is
fitted on ``--fit`` models per format and predicts the others, never seen while fitting.

Target: >= 90 % of the held-out models within +-20 % of their measured p50. Prints the table of
every held-out model's error and writes benchmarks/results/estimator.json (with the host kind).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hostkind import stamp  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "estimator.json"
TARGET_SHARE = 0.90
TOLERANCE = 0.20
WIDTHS = ((4, 8, 12, 16, 24), (8, 16, 24, 32, 48), (16, 32, 48, 64, 96))
HIDDEN = (32, 64, 128, 256)


def architectures(n: int, seed: int) -> list[tuple[tuple[int, int, int], int]]:
    """``n`` distinct (widths, hidden), the example's own (16, 32, 64), 128 first."""
    rng = np.random.default_rng(seed)
    chosen = [((16, 32, 64), 128)]
    while len(chosen) < n:
        arch = (tuple(int(rng.choice(w)) for w in WIDTHS), int(rng.choice(HIDDEN)))
        if arch not in chosen:
            chosen.append(arch)
    return chosen


def measure(path: Path, fmt: str, x: np.ndarray, min_seconds: float) -> float:
    """p50 ms of the runner's timing loop on ``path`` at 1 thread."""
    from edgekit.resources import runner_module

    runner = runner_module()
    session = runner.open_model(str(path), fmt, threads=1)
    invoke = session.bind(session.prepare({session.inputs[0]["name"]: x}))
    for _ in range(5):
        invoke()
    return statistics.median(runner.time_loop(invoke, 50, min_seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--fit", type=int, default=8, help="models per format the estimator is fitted on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default="tflite,onnx")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch

    from edgekit.examples.fashion_cnn import FashionCNN
    from edgekit.export import export, get_format
    from edgekit.optimize.estimator import LatencyEstimator, Sample, features, within
    from edgekit.outputs import write_json_atomic

    torch.set_num_threads(1)
    formats = [f for f in args.formats.split(",") if get_format(f).available()]
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    started = time.perf_counter()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-estimator-") as tmp:
        for i, (widths, hidden) in enumerate(architectures(args.models, args.seed)):
            torch.manual_seed(i)
            model = FashionCNN(widths, hidden).eval()
            feats = features(model, (torch.from_numpy(x),))
            label = f"widths {widths}, hidden {hidden}"
            for fmt in formats:
                artifact = export(model, torch.from_numpy(x), fmt, "fp32", out_dir=tmp, name=f"m{i}-{fmt}",
                                  check_parity=False)
                p50 = measure(artifact.path, fmt, x, args.min_seconds)
                samples.append(Sample(feats, fmt, "fp32", p50, label))
                print(f"  {label:32s} {fmt:7s} {p50:.4f} ms", flush=True)
    rng = np.random.default_rng(args.seed)
    rows, fit_labels = [], {}
    for fmt in formats:
        group = [s for s in samples if s.format == fmt]
        order = rng.permutation(len(group))
        fit, held = [group[j] for j in order[: args.fit]], [group[j] for j in order[args.fit:]]
        estimator = LatencyEstimator.fit("this host (1 thread)", fit)
        fit_labels[fmt] = [s.label for s in fit]
        rows += estimator.errors(held)
    share = within(rows, TOLERANCE)
    print()
    print(f"{'held-out model':32s} {'format':7s} {'measured ms':>11s} {'predicted':>10s} {'error':>8s}")
    for r in rows:
        print(f"{r['label']:32s} {r['format']:7s} {r['measured_ms']:11.4f} {r['predicted_ms']:10.4f} "
              f"{100 * r['relative_error']:+7.1f}%")
    met = share >= TARGET_SHARE
    print(f"\ntarget {'met' if met else 'NOT MET'}: {100 * share:.0f} % of {len(rows)} held-out models within "
          f"±{100 * TOLERANCE:.0f} % (target ≥ {100 * TARGET_SHARE:.0f} %), fitted on {args.fit} per format")
    result = {"benchmark": "estimator", "fit_per_format": args.fit, "models": args.models, "seed": args.seed,
              "min_seconds": args.min_seconds, "share_within": share, "tolerance": TOLERANCE, "met": met,
              "fitted_on": fit_labels, "rows": rows, "seconds": time.perf_counter() - started}
    stamp(result, "rows")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
