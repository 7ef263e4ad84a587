"""Weight rounding for int8 export: put each layer's weights on the int8 grid the converter will use,
choosing the rounding that best preserves the layer's outputs on calibration data (GPTQ).

Round-to-nearest treats every weight alone. GPTQ (Frantar et al., 2022) quantizes a layer's input
columns one at a time and spreads each rounding error over the columns not yet quantized, weighted
by the inverse of the input covariance H = E[x xᵀ], so the layer's output W·x changes least for the
inputs it really sees. On EfficientNet-Lite0 this is the difference between 87 % and 95+ % top-1
agreement with float (docs/export.md).

The result is an ordinary float model whose weights are exactly ``scale · q`` with q in [-127, 127]
and each channel's largest |q| = 127, so the converters' symmetric min/max weight quantization
(ONNX Runtime, PT2E: scale = max|w| / 127) recovers these q exactly. A BatchNorm after a conv
scales whole output channels, which leaves a per-channel grid a grid, so folding it later is safe.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ExportError
from edgekit.export import calibration as cal

QMAX = 127  # symmetric int8 weights: [-127, 127]
DAMPING = 0.01  # of the mean diagonal of H, the usual GPTQ damping
MAX_COLUMNS = 8192  # a layer with more input columns (k·k·Cin per group) keeps round-to-nearest
BATCH = 8


@dataclass
class RoundingSummary:
    method: str
    layers: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    output_error_ratio: float | None = None  # Σ GPTQ layer-output error / Σ round-to-nearest error

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "layers": self.layers, "samples": self.samples}
        if self.output_error_ratio is not None:
            out["output_error_vs_nearest"] = round(self.output_error_ratio, 4)
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out


def gptq_round(
    model: Any,
    examples: Sequence[Any],
    calibration: Any,
    per_channel: bool = True,
    skip_modules: Sequence[str] = (),
    names: Sequence[str] | None = None,
) -> tuple[Any, RoundingSummary]:
    """A copy of ``model`` whose Conv2d/Linear weights sit on the int8 grid, rounded by GPTQ.

    ``calibration`` is what ``export(calibration=...)`` takes; ``skip_modules`` are module names
    (and their children) left untouched, e.g. the ones an export keeps in float.
    """
    import torch

    names = list(names or cal.input_names(model, len(examples)))
    feeds = cal.to_feeds(calibration, names, "calibration data")
    cal.check_shapes(feeds, examples, names, "calibration data")
    layers = _layers(model, skip_modules)
    summary = RoundingSummary(method="gptq", samples=cal.sample_count(feeds))
    rounded = copy.deepcopy(model).eval()
    if not layers:
        return rounded, summary
    stats = _input_statistics(model, layers, feeds)
    targets = dict(rounded.named_modules())
    err_gptq = err_rtn = 0.0
    with torch.no_grad():
        for name, module in layers.items():
            stat = stats.get(name)
            if stat is None or stat.skipped:
                summary.skipped[name] = stat.skipped if stat else "never called on the calibration data"
                continue
            weight = module.weight.detach().double()
            rows = weight.reshape(weight.shape[0], -1)
            groups = getattr(module, "groups", 1)
            hessian = stat.hessian()
            try:
                q = _gptq(rows, hessian, groups, per_channel)
            except RuntimeError as exc:  # a singular H even after damping
                summary.skipped[name] = f"GPTQ failed ({exc}); round-to-nearest"
                continue
            err_gptq += _output_error(rows, q, hessian, groups)
            err_rtn += _output_error(rows, _nearest(rows, per_channel), hessian, groups)
            targets[name].weight.copy_(q.reshape(weight.shape).to(module.weight.dtype))
            summary.layers += 1
    if err_rtn > 0:
        summary.output_error_ratio = err_gptq / err_rtn
    return rounded, summary


# -- which layers -------------------------------------------------------------------------------


def _layers(model: Any, skip_modules: Sequence[str]) -> dict[str, Any]:
    import torch

    def skipped(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in skip_modules)

    out = {}
    for name, module in model.named_modules():
        if skipped(name) or not isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        if isinstance(getattr(module, "weight", None), torch.nn.Parameter) and module.weight.is_floating_point():
            out[name] = module
    return out


# -- input statistics ---------------------------------------------------------------------------


class _Hessian:
    """Σ x xᵀ over a layer's input columns, per group (float64)."""

    def __init__(self, module: Any) -> None:
        import torch

        self.module = module
        self.groups = getattr(module, "groups", 1)
        cols = module.weight[0].numel()
        self.skipped = "" if cols <= MAX_COLUMNS else f"{cols} input columns (over {MAX_COLUMNS}); round-to-nearest"
        self.sum = None if self.skipped else torch.zeros(self.groups, cols, cols, dtype=torch.float64)
        self.count = 0

    def add(self, x: Any) -> None:
        if self.skipped:
            return
        for sample in x.detach():  # one sample at a time: unfolded 3×3 inputs are large
            cols = _columns(self.module, sample.unsqueeze(0).double(), self.groups)
            self.sum += cols @ cols.transpose(1, 2)
            self.count += cols.shape[-1]

    def hessian(self) -> Any:
        return self.sum / max(self.count, 1)


def _columns(module: Any, x: Any, groups: int) -> Any:
    """(groups, columns, positions): the input vectors each output of ``module`` is a dot product with."""
    import torch
    import torch.nn.functional as F

    if isinstance(module, torch.nn.Linear):
        return x.reshape(-1, x.shape[-1]).t().unsqueeze(0)
    padding = module.padding
    if isinstance(padding, str):  # "valid" / "same" (stride 1): the explicit per-side amount
        padding = 0 if padding == "valid" else tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    n, ck, positions = cols.shape
    return cols.view(n, groups, ck // groups, positions).permute(1, 2, 0, 3).reshape(groups, ck // groups, n * positions)


def _input_statistics(model: Any, layers: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, _Hessian]:
    import torch

    stats: dict[str, _Hessian] = {}
    handles = []
    for name, module in layers.items():
        def hook(mod: Any, inputs: tuple[Any, ...], name: str = name) -> None:
            stats.setdefault(name, _Hessian(mod)).add(inputs[0])

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for chunk, real in cal.batches(feeds, BATCH):
                model(*(torch.from_numpy(np.asarray(v[:real])) for v in chunk.values()))
    except Exception as exc:
        raise ExportError(
            f"the model failed on the calibration data while rounding weights: {exc}",
            "check the calibration samples, or pass options={'weight_rounding': 'nearest'}",
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return stats


# -- rounding -----------------------------------------------------------------------------------


def _scales(w: Any, per_channel: bool) -> Any:
    amax = w.abs().amax(dim=1) if per_channel else w.abs().max().expand(w.shape[0])
    return amax.clamp_min(1e-12) / QMAX


def _nearest(w: Any, per_channel: bool) -> Any:
    scale = _scales(w, per_channel).unsqueeze(1)
    return (w / scale).round().clamp(-QMAX, QMAX) * scale


def _gptq(w: Any, hessian: Any, groups: int, per_channel: bool) -> Any:
    """GPTQ on ``w`` (rows = output channels, columns = flattened inputs of their group)."""
    import torch

    rows, cols = w.shape
    per_group = rows // groups
    scales = _scales(w, per_channel)
    scale = scales.reshape(groups, per_group)
    W = w.reshape(groups, per_group, cols).clone()
    H = hessian.clone()
    diag = torch.diagonal(H, dim1=1, dim2=2)
    diag += DAMPING * diag.mean(dim=1, keepdim=True) + 1e-12
    # Upper Cholesky factor of H⁻¹: row i holds how column i's error spreads to later columns.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.empty_like(W)
    for i in range(cols):
        q = (W[:, :, i] / scale).round().clamp(-QMAX, QMAX)
        Q[:, :, i] = q
        err = (W[:, :, i] - q * scale) / U[:, i, i].unsqueeze(1)
        W[:, :, i + 1 :] -= err.unsqueeze(2) * U[:, i, i + 1 :].unsqueeze(1)
    Q = Q.reshape(rows, cols)
    _keep_scale(Q, w, per_channel)
    return Q * scales.unsqueeze(1)


def _keep_scale(Q: Any, w: Any, per_channel: bool) -> None:
    """Pin the element that sets each scale (max |w|) to ±127, so the converter's min/max
    observer computes the same scale and reads back exactly these integers."""
    import torch

    if per_channel:
        rows = torch.arange(w.shape[0])
        at = w.abs().argmax(dim=1)
        Q[rows, at] = torch.sign(w[rows, at]) * QMAX
    else:
        at = int(w.abs().argmax())
        Q.view(-1)[at] = torch.sign(w.view(-1)[at]) * QMAX


def _output_error(w: Any, q: Any, hessian: Any, groups: int) -> float:
    """E‖(W − Q)x‖² over the calibration inputs (``w``, ``q``: rows × columns): trace(ΔW H ΔWᵀ)
    summed over groups."""
    delta = (w - q).reshape(groups, -1, hessian.shape[-1])
    return float((delta @ hessian * delta).sum())


__all__ = ["RoundingSummary", "gptq_round"]
