"""Does the exported file compute what the torch model computes? And how accurate is the file itself?

The artifact runs through the device runner's own code (``edgekit.resources.runner_module()``:
``open_model`` → ``session.run``), so host parity exercises the exact path a device takes,
int8 input quantization and output dequantization included.

Tolerance (absolute, on every output): ``rtol[precision] × scale + atol[precision]`` where
``scale`` is the largest |torch output| over the samples. The relative parts: fp32 1e-4, fp16
2e-2 (EfficientNet-Lite0 in fp16 drifts ~1.1 % over its 50 layers), int8 0.3 (8-bit activations carry ~0.5 % of their range as rounding noise per layer and it
accumulates: EfficientNet-Lite0 reaches ~20 % on low-margin images; a broken int8 model —
unfused ReLU6, wrong ranges — lands at 50-70 %).
``passed`` means max|Δ| ≤ tolerance. Top-1 agreement is reported for classifier-like outputs
(2-D, ≥ 2 classes) but does not decide ``passed``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ExportError, ParityError
from edgekit.export import calibration as cal
from edgekit.export.base import Artifact

RTOL = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.3}
ATOL = {"fp32": 1e-5, "fp16": 1e-3, "int8": 1e-3}
_LAYOUT_NOTE = re.compile(r"^layout: input '(.+)' is NHWC")


def layout_note(name: str) -> str:
    """The note a format adds when an input is channels-last (parity transposes torch's NCHW)."""
    return f"layout: input '{name}' is NHWC (channels last); torch takes NCHW"


# -- running the artifact ----------------------------------------------------------------------


def open_session(artifact: Artifact, threads: int | None = None) -> Any:
    """The runner's session for ``artifact`` (its I/O quantization from the manifest)."""
    from edgekit.resources import runner_module

    runner = runner_module()
    try:
        return runner.open_model(
            str(artifact.path), artifact.format, threads=threads, io_quantization=artifact.io_quantization()
        )
    except runner.RunnerError as exc:
        raise ExportError(f"cannot run {artifact.path.name} on this host: {exc}") from exc


def run_artifact(artifact: Artifact, feeds: dict[str, np.ndarray], session: Any = None) -> list[np.ndarray]:
    """Float outputs of ``artifact`` for ``feeds`` (``{input name: samples stacked on axis 0}``).

    The samples are fed in chunks of the model's batch size (the last chunk padded), so a model
    exported with batch 1 still takes any number of samples.
    """
    session = session or open_session(artifact)
    specs = session.inputs
    names = [s["name"] for s in specs]
    feeds = cal.to_feeds(feeds, names, "inputs")
    batch = _static_batch(specs) or min(256, cal.sample_count(feeds))
    outs: list[list[np.ndarray]] = []
    for chunk, real in cal.batches(feeds, batch, pad=True):
        result = session.run({n: _as_input(chunk[n], spec) for n, spec in zip(names, specs)})
        if not outs:
            outs = [[] for _ in result]
        for store, arr in zip(outs, result):
            store.append(np.asarray(arr)[:real])
    return [np.concatenate(parts, axis=0) for parts in outs]


def _static_batch(specs: Sequence[dict[str, Any]]) -> int | None:
    dims = [s["shape"][0] for s in specs if s["shape"]]
    if dims and all(isinstance(d, int) and d > 0 for d in dims):
        return int(dims[0])
    return None


def _as_input(arr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return arr


def _to_artifact_layout(artifact: Artifact, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Torch-layout feeds (NCHW) in the artifact's layout (NHWC inputs of a channels-last file)."""
    nhwc = {m.group(1) for note in artifact.notes if (m := _LAYOUT_NOTE.match(note))}
    out = {}
    for spec, (name, arr) in zip(artifact.inputs, feeds.items()):
        arr = np.asarray(arr)
        if spec.name in nhwc and arr.ndim == 4:
            arr = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
        out[spec.name] = arr
    return out


# -- torch side --------------------------------------------------------------------------------


def torch_outputs(model: Any, arrays: Sequence[np.ndarray], batch: int = 256) -> list[np.ndarray]:
    """The torch model's outputs (flattened to a list) for samples stacked on axis 0."""
    import torch

    n = len(arrays[0])
    outs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, n, batch):
            args = [torch.from_numpy(np.ascontiguousarray(a[start : start + batch])) for a in arrays]
            result = [o.detach().cpu().numpy() for o in cal.flatten_outputs(model(*args))]
            if not outs:
                outs = [[] for _ in result]
            for store, arr in zip(outs, result):
                store.append(arr)
    return [np.concatenate(parts, axis=0) for parts in outs]


# -- comparison --------------------------------------------------------------------------------


def tolerance_for(precision: str, scale: float) -> float:
    return RTOL.get(precision, RTOL["int8"]) * scale + ATOL.get(precision, ATOL["int8"])


def compare_outputs(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], precision: str = "fp32") -> dict[str, Any]:
    """Compare reference and artifact outputs (lists, one array per output, samples on axis 0).

    Returns ``n``, ``max_abs_diff``, ``mean_abs_diff``, ``top1_agreement`` (None unless an output
    is classifier-like), ``tolerance`` (absolute), ``passed``, plus ``rtol``, ``scale`` and
    per-output details under ``outputs``.
    """
    if len(expected) != len(actual):
        raise ExportError(f"the artifact has {len(actual)} outputs but the reference has {len(expected)}")
    details = []
    scale = 0.0
    total_abs = 0.0
    total_count = 0
    worst = 0.0
    top1 = None
    for i, (ref, got) in enumerate(zip(expected, actual)):
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(got, dtype=np.float64)
        if ref.size != got.size:
            raise ExportError(f"output {i} has {got.size} values but the reference has {ref.size}")
        got = got.reshape(ref.shape)
        diff = np.abs(ref - got)
        finite = np.isfinite(got).all()
        out_scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        scale = max(scale, out_scale)
        max_diff = float(diff.max()) if diff.size else 0.0
        if not finite:
            max_diff = float("inf")
        worst = max(worst, max_diff)
        total_abs += float(diff.sum())
        total_count += diff.size
        entry: dict[str, Any] = {
            "index": i,
            "max_abs_diff": max_diff,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "scale": out_scale,
        }
        if ref.ndim == 2 and ref.shape[1] >= 2:
            agree = float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1)))
            entry["top1_agreement"] = agree
            top1 = agree if top1 is None else min(top1, agree)
        details.append(entry)
    tol = tolerance_for(precision, scale)
    return {
        "n": int(len(expected[0])) if len(expected) and np.ndim(expected[0]) else 1,
        "max_abs_diff": worst,
        "mean_abs_diff": total_abs / max(total_count, 1),
        "top1_agreement": top1,
        "tolerance": tol,
        "passed": bool(worst <= tol),
        "rtol": RTOL.get(precision, RTOL["int8"]),
        "scale": scale,
        "outputs": details,
    }


def check_parity(
    model: Any,
    artifact: Artifact,
    inputs: Any,
    strict: bool = False,
    threads: int | None = None,
    session: Any = None,
) -> dict[str, Any]:
    """Run ``inputs`` through torch and through the artifact (runner code path) and compare.

    ``inputs``: samples stacked on axis 0, as one array, a list in forward() order or a dict by
    torch input name (the artifact's own names are accepted too). Returns compare_outputs' dict
    plus ``precision``, ``runtime`` and, when it failed, ``warning``. ``strict``: raise
    ParityError on failure.
    """
    n_inputs = len(artifact.inputs)
    torch_names = cal.input_names(model, n_inputs)
    if isinstance(inputs, dict) and all(spec.name in inputs for spec in artifact.inputs):
        arrays = [np.asarray(inputs[spec.name]) for spec in artifact.inputs]
    else:
        feeds = cal.to_feeds(inputs, torch_names, "parity inputs")
        arrays = [np.asarray(feeds[n]) for n in torch_names]
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
    expected = torch_outputs(model, arrays)
    session = session or open_session(artifact, threads=threads)
    feeds = _to_artifact_layout(artifact, dict(zip(torch_names, arrays)))
    actual = run_artifact(artifact, feeds, session=session)
    result = compare_outputs(expected, actual, artifact.precision)
    result["precision"] = artifact.precision
    result["runtime"] = dict(session.runtime)
    if not result["passed"]:
        top1 = result["top1_agreement"]
        result["warning"] = (
            f"{artifact.path.name} differs from torch: max|Δ| {result['max_abs_diff']:.3g} > tolerance "
            f"{result['tolerance']:.3g} ({result['rtol']:g} × output scale {result['scale']:.3g} for "
            f"{artifact.precision})" + (f"; top-1 agreement {100 * top1:.1f} %" if top1 is not None else "")
        )
        if strict:
            raise ParityError(result["warning"], "check the calibration data, or export at a higher precision")
    return result


# -- accuracy ----------------------------------------------------------------------------------


def evaluate_artifact(artifact: Artifact, x: np.ndarray, y: np.ndarray, batch: int = 256, session: Any = None) -> dict[str, Any]:
    """Accuracy of the artifact itself, in its host runtime (the runner), over ``(x, y)``.

    ``x`` is in torch layout; batches are ``batch`` samples for a dynamic-batch model, else the
    model's own batch size.
    """
    session = session or open_session(artifact)
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise ExportError(f"eval data has {len(x)} inputs but {len(y)} labels")
    specs = session.inputs
    if len(specs) != 1:
        raise ExportError("evaluate_artifact takes single-input models", "pass one x array and its labels")
    step = _static_batch(specs) or batch
    feeds = _to_artifact_layout(artifact, {"x": x.astype(np.float32) if x.dtype == np.float64 else x})
    name = specs[0]["name"]
    correct = 0
    start = 0
    for chunk, real in cal.batches({name: feeds[artifact.inputs[0].name]}, step, pad=True):
        logits = np.asarray(session.run(chunk)[0])[:real]
        preds = logits.reshape(real, -1).argmax(axis=1)
        correct += int(np.sum(preds == y[start : start + real]))
        start += real
    n = len(y)
    return {"n": int(n), "correct": int(correct), "accuracy": correct / n if n else 0.0}


def evaluate_metric(artifact: Artifact, model: Any, inputs: dict[str, np.ndarray], labels: np.ndarray | None = None,
                    metric: str | None = None, session: Any = None) -> Any:
    """The task metric (``edgekit.metrics``) of the artifact in its host runtime on ``inputs`` (by
    the artifact's input names, samples on axis 0), the float torch model's beside it.

    ``metric`` None infers it from the labels and the output shape. Returns a MetricResult.
    """
    from edgekit import metrics

    names = [spec.name for spec in artifact.inputs]
    arrays = [np.asarray(inputs[n]) for n in names]
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
    reference = torch_outputs(model, arrays)[0] if model is not None else None
    feeds = _to_artifact_layout(artifact, dict(zip(names, arrays)))
    actual = run_artifact(artifact, feeds, session=session)[0]
    name = metric or metrics.infer_metric(labels, actual.shape)
    return metrics.evaluate(name, actual, labels=labels, reference_outputs=reference)


def evaluate_torch(model: Any, x: np.ndarray, y: np.ndarray, examples: Sequence[Any] | None = None, batch: int = 256) -> dict[str, Any]:
    """Accuracy of the torch model over ``(x, y)`` (the reference for an artifact's accuracy)."""
    y = np.asarray(y).reshape(-1)
    logits = torch_outputs(model, [np.asarray(x, dtype=np.float32)], batch=batch)[0]
    correct = int(np.sum(logits.reshape(len(y), -1).argmax(axis=1) == y))
    return {"n": int(len(y)), "correct": correct, "accuracy": correct / len(y) if len(y) else 0.0}


__all__ = [
    "ATOL",
    "RTOL",
    "check_parity",
    "compare_outputs",
    "evaluate_artifact",
    "evaluate_metric",
    "evaluate_torch",
    "layout_note",
    "open_session",
    "run_artifact",
    "tolerance_for",
]
