"""Latency estimator (issue 14, M23): fitted on a few measured models, judged on held-out ones.

    python benchmarks/estimator.py [--models 32] [--fit 4,8,12] [--batch 8] [--seed 0] [--formats tflite,onnx]

Architectures: the example CNN's layout (``edgekit.examples.fashion_cnn.FashionCNN``) at seeded
random widths (conv channels 4-96, hidden 32-256; random weights: latency does not depend on
them), each exported fp32 to every format and timed by the runner's own loop (1 thread, at least
1 s of calls over three sessions, the median of their medians) on this host, which is one device: the estimator is
fitted on ``--fit`` models per format (each count in turn: how many it needs) and predicts the
others, never seen while fitting.

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


SESSIONS = 3  # a runtime's speed moves between sessions (ONNX Runtime: up to 30 % here): median of three


def measure(path: Path, fmt: str, x: np.ndarray, min_seconds: float) -> float:
    """p50 ms of the runner's timing loop on ``path`` at 1 thread: the median over SESSIONS
    sessions of each one's median."""
    from edgekit.resources import runner_module

    runner = runner_module()
    medians = []
    for _ in range(SESSIONS):
        session = runner.open_model(str(path), fmt, threads=1)
        invoke = session.bind(session.prepare({session.inputs[0]["name"]: x}))
        for _ in range(5):
            invoke()
        medians.append(statistics.median(runner.time_loop(invoke, 50, min_seconds / SESSIONS)))
    return statistics.median(medians)


def judge(samples: list[Any], formats: list[str], n_fit: int, seed: int) -> dict[str, Any]:
    """Fit on ``n_fit`` seeded models per format, predict the others: every held-out row, the share within."""
    from edgekit.optimize.estimator import LatencyEstimator, within

    rng = np.random.default_rng(seed)
    rows, fitted_on = [], {}
    for fmt in formats:
        group = [s for s in samples if s.format == fmt]
        order = rng.permutation(len(group))
        fit, held = [group[j] for j in order[:n_fit]], [group[j] for j in order[n_fit:]]
        rows += LatencyEstimator.fit("this host (1 thread)", fit).errors(held)
        fitted_on[fmt] = [s.label for s in fit]
    share = within(rows, TOLERANCE)
    return {"fit_per_format": n_fit, "share_within": share, "met": share >= TARGET_SHARE, "fitted_on": fitted_on,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--fit", default="4,8,12", help="models per format the estimator is fitted on (each judged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default="tflite,onnx")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8,
                        help="images per call (8: calls of 0.1-1 ms, where session-to-session noise is smaller)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.fit = [int(n) for n in args.fit.split(",")]
    import torch

    from edgekit.examples.fashion_cnn import FashionCNN
    from edgekit.export import export, get_format
    from edgekit.optimize.estimator import Sample, features
    from edgekit.outputs import write_json_atomic

    torch.set_num_threads(1)
    formats = [f for f in args.formats.split(",") if get_format(f).available()]
    x = np.random.default_rng(0).standard_normal((args.batch, 1, 28, 28)).astype(np.float32)
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
    studies = [judge(samples, formats, n_fit, args.seed) for n_fit in args.fit]
    rows = studies[-1]["rows"]
    print()
    print(f"{'held-out model':32s} {'format':7s} {'measured ms':>11s} {'predicted':>10s} {'error':>8s}  "
          f"(fitted on {studies[-1]['fit_per_format']} per format)")
    for r in rows:
        print(f"{r['label']:32s} {r['format']:7s} {r['measured_ms']:11.4f} {r['predicted_ms']:10.4f} "
              f"{100 * r['relative_error']:+7.1f}%")
    print()
    for study in studies:
        print(f"target {'met' if study['met'] else 'NOT MET'}: fitted on {study['fit_per_format']} per format, "
              f"{100 * study['share_within']:.0f} % of {len(study['rows'])} held-out models within "
              f"±{100 * TOLERANCE:.0f} % (target ≥ {100 * TARGET_SHARE:.0f} %)")
    result = {"benchmark": "estimator", "models": args.models, "seed": args.seed, "min_seconds": args.min_seconds,
              "batch": args.batch,
              "tolerance": TOLERANCE, "target_share": TARGET_SHARE, "studies": studies, "rows": rows,
              "samples": [vars(s) for s in samples], "seconds": time.perf_counter() - started}
    stamp(result, "rows")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
