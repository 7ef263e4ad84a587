"""What the formats that quantize through PT2E share (TFLite full-integer with litert's quantizer,
ExecuTorch with XNNPACK's): calibration of a prepared graph, and two annotation fixes.

Annotation fixes (run around a quantizer's own ``annotate``):
  * conv/linear → ReLU/ReLU6 annotated as one fused pattern, so the activation's output is
    observed and not the conv's: with the conv's pre-clip range ReLU6 kept ~17 levels of [0, 6]
    (EfficientNet-Lite0: 62 % top-1 agreement through XNNPACK's quantizer as it is, 69 % in
    the PT2E simulation; both runtimes fuse the activation into the conv).
  * zero padding shares its input's quantization parameters (no requantization for a pad).

Calibration:
A graph exported for batch 1 would see the samples one call at a time, and a histogram
observer's fixed cost per call (re-binning 2048 bins × 128) dominated: 100 sentences through a
6-layer encoder's ~100 observers took minutes. So the full batches go through a copy of the graph
exported and prepared for ``CALIBRATION_BATCH``, whose observer state is then loaded into the
batch-1 graph (same graph, same observers: checked, else one call per sample), and the remainder
goes through the batch-1 graph itself: every sample observed once, no padding.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgekit.export import calibration as cal
from edgekit.export.converter import quiet

CALIBRATION_BATCH = 16  # samples per calibration call when the graph is exported for one

# (inputs at a wider batch) -> that graph prepared like the batch-1 one; raises when it does not
# export at that batch (a model that hard-codes batch 1)
PrepareAt = Callable[[tuple[Any, ...]], Any]


def calibrate(prepared: Any, prepare_at: PrepareAt, args: tuple[Any, ...], feeds: dict[str, np.ndarray],
              names: list[str], nhwc: list[int] | None = None) -> int:
    """Run the calibration samples through ``prepared``'s observers; the number used (see the module doc)."""
    nhwc = nhwc or []
    batch = int(args[0].shape[0]) if args[0].dim() else 1
    n = cal.sample_count(feeds)
    start = used = 0
    if batch == 1 and n >= 2 * CALIBRATION_BATCH:
        big = _prepared_for_batch(prepare_at, args, CALIBRATION_BATCH)
        wide, small = (observers(big), observers(prepared)) if big is not None else ({}, {})
        if big is not None and wide.keys() == small.keys():
            start = n - n % CALIBRATION_BATCH
            used = observe(big, {k: v[:start] for k, v in feeds.items()}, names, nhwc, CALIBRATION_BATCH)
            for key, observer in wide.items():  # the same modules, now holding what they observed
                small[key].load_state_dict(observer.state_dict())
    if start < n:
        used += observe(prepared, {k: v[start:] for k, v in feeds.items()}, names, nhwc, batch, pad=n - start < batch)
    return used


def _prepared_for_batch(prepare_at: PrepareAt, args: tuple[Any, ...], batch: int) -> Any:
    wide = tuple(a.expand(batch, *a.shape[1:]).contiguous() if a.dim() else a for a in args)
    try:
        with quiet():
            return prepare_at(wide)
    except Exception:  # noqa: BLE001 - any failure: calibrate one sample per call instead
        return None


def observers(prepared: Any) -> dict[str, Any]:
    """Observer modules by name, with the node each one observes (the same graph gives the same keys)."""
    from torchao.quantization.pt2e.observer import ObserverBase

    modules = dict(prepared.named_modules())
    found = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), ObserverBase):
            source = node.args[0].name if node.args and hasattr(node.args[0], "name") else ""
            found[(node.target, source, type(modules[node.target]).__name__)] = modules[node.target]
    return {f"{k[0]}<{k[1]}:{k[2]}": v for k, v in found.items()}


def observe(prepared: Any, feeds: dict[str, np.ndarray], names: list[str], nhwc: list[int], batch: int,
            pad: bool = False) -> int:
    """Feed ``feeds`` to ``prepared`` ``batch`` samples per call; the number of real samples fed."""
    import torch

    used = 0
    with torch.no_grad(), quiet():
        for chunk, real in cal.batches(feeds, batch, pad=pad):
            tensors = []
            for i, name in enumerate(names):
                arr = np.asarray(chunk[name])
                if arr.dtype == np.float64:
                    arr = arr.astype(np.float32)
                if i in nhwc:
                    arr = arr.transpose(0, 2, 3, 1)
                tensors.append(torch.from_numpy(np.ascontiguousarray(arr)))
            prepared(*tensors)
            used += real
    return used


# -- annotation fixes -------------------------------------------------------------------------


def aten() -> Any:
    import torch

    return torch.ops.aten


def annotated(node: Any) -> bool:
    ann = node.meta.get("quantization_annotation")
    return ann is not None and getattr(ann, "_annotated", False)


def fusable_activation(node: Any) -> bool:
    """relu, relu6 (hardtanh 0..6) and hardtanh(-1, 1): activations TFLite and XNNPACK fuse into conv/FC."""
    ops = aten()
    if node.target in (ops.relu.default, ops.relu_.default):
        return True
    if node.target in (ops.hardtanh.default, ops.hardtanh_.default):
        lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
        return (float(lo), float(hi)) in ((0.0, 6.0), (-1.0, 1.0))
    return False


def zero_constant_pad(node: Any) -> bool:
    ops = aten()
    if node.target == ops.pad.default:
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
    else:
        mode, value = "constant", (node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0))
    return mode == "constant" and value in (None, 0, 0.0)


def annotate_fused_activations(model: Any, config: Any) -> int:
    """Annotate each conv/linear whose only user is a fusable activation as one pattern (inputs
    and weight on the conv, the output on the activation); before the quantizer's own annotate,
    which then leaves both alone. The number of patterns annotated."""
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    if config is None or config.input_activation is None:
        return 0
    ops = aten()
    producers = {ops.conv1d.default, ops.conv2d.default, ops.convolution.default, ops.linear.default}
    fused = 0
    for node in model.graph.nodes:
        if node.op != "call_function" or not fusable_activation(node):
            continue
        prod = node.args[0]
        if not isinstance(prod, Node) or prod.target not in producers or len(prod.users) != 1:
            continue
        if annotated(prod) or annotated(node):
            continue
        qmap = {prod.args[0]: config.input_activation, prod.args[1]: config.weight}
        if len(prod.args) > 2 and isinstance(prod.args[2], Node):
            qmap[prod.args[2]] = config.bias
        prod.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
        node.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=config.output_activation,
                                                                      _annotated=True)
        fused += 1
    return fused


def share_pad_quantization(model: Any) -> int:
    """Zero padding after a quantized output shares that output's parameters (after annotate)."""
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    ops = aten()
    pads = {ops.pad.default, ops.constant_pad_nd.default}
    shared_pads = 0
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in pads or annotated(node):
            continue
        src = node.args[0]
        ann = src.meta.get("quantization_annotation") if isinstance(src, Node) else None
        if ann is None or ann.output_qspec is None or not zero_constant_pad(node):
            continue
        shared = SharedQuantizationSpec(src)
        node.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map={src: shared},
                                                                      output_qspec=shared, _annotated=True)
        shared_pads += 1
    return shared_pads


__all__ = ["CALIBRATION_BATCH", "annotate_fused_activations", "calibrate", "observe", "observers",
           "share_pad_quantization"]
