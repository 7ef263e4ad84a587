"""Measure a torch model: accuracy, parameters, non-zeros, bytes, gzip bytes, MACs, sparsity.

Every compression step measures the model before and after with the same functions, so a
report's figures are comparable across techniques. Nothing here changes the model.
"""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from edgekit.compress.layers import forward_with_hooks

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Figures:
    """What one model measures: the numbers a StepReport compares before and after a step.

    ``size_bytes`` is the raw size of the parameters and buffers as stored (fp32 for a float
    model); ``gzip_bytes`` is the same bytes gzip-compressed (what unstructured sparsity and
    clustering buy); ``artifact_bytes`` is the file size of an exported artifact when a step
    produced one (int8 ONNX/TFLite). ``accuracy`` is None when no validation data was given.
    """

    params: int
    nonzero_params: int
    size_bytes: int
    gzip_bytes: int
    macs: int | None = None
    accuracy: float | None = None
    artifact_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The effective weights (masks applied) and every other parameter/buffer, by state name."""
    tensors = []
    for name, tensor in model.state_dict().items():
        if name.endswith("_mask"):
            continue
        if name.endswith("_orig"):
            owner_name, _, attr = name.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            tensor = getattr(owner, attr[: -len("_orig")])
            name = f"{owner_name}.{attr[: -len('_orig')]}" if owner_name else attr[: -len("_orig")]
        tensors.append((name, tensor.detach()))
    return tensors


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters (a pruning mask does not change the count)."""
    return sum(t.numel() for name, t in weight_tensors(model) if _is_param_name(model, name))


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(t)) for name, t in weight_tensors(model) if _is_param_name(model, name))


def _is_param_name(model: nn.Module, name: str) -> bool:
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    return attr in owner._parameters or f"{attr}_orig" in owner._parameters


def state_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the state (parameters and buffers), as stored."""
    return sum(t.numel() * t.element_size() for _, t in weight_tensors(model))


def gzip_bytes(model: nn.Module, level: int = 9) -> int:
    """Size of the state's raw bytes after gzip: what storing or shipping the weights costs."""
    blob = b"".join(t.contiguous().cpu().numpy().tobytes() for _, t in weight_tensors(model))
    return len(gzip.compress(blob, compresslevel=level, mtime=0))


def count_macs(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (conv and linear layers).

    Counted from the shapes a forward pass produces, so channel pruning and low-rank factorization
    show up; unstructured zeros do not (dense kernels multiply them too).
    """
    total = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features
        else:  # convolution: each output element costs in/groups × kernel elements
            kernel = 1
            for k in module.kernel_size:
                kernel *= k
            total[0] += output.numel() * (module.in_channels // module.groups) * kernel

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    forward_with_hooks(model, example_inputs, hooks)
    batch = int(example_inputs[0].shape[0]) if example_inputs and example_inputs[0].dim() else 1
    return total[0] // max(batch, 1)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             max_batches: int | None = None) -> float:
    """Top-1 accuracy over ``(inputs, targets)`` batches."""
    was_training = model.training
    model.eval()
    correct = seen = 0
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            seen += int(y.numel())
    finally:
        model.train(was_training)
    return correct / seen if seen else float("nan")


def measure(model: nn.Module, example_inputs: Sequence[torch.Tensor] | None = None,
            val: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Figures:
    """Figures of ``model``; MACs need ``example_inputs``, accuracy needs ``val`` batches."""
    return Figures(
        params=count_params(model),
        nonzero_params=count_nonzero(model),
        size_bytes=state_bytes(model),
        gzip_bytes=gzip_bytes(model),
        macs=count_macs(model, example_inputs) if example_inputs is not None else None,
        accuracy=evaluate(model, val) if val is not None else None,
    )


def layer_sparsity(model: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES) -> dict[str, float]:
    """Fraction of exact zeros in each conv/linear weight (masks applied), by module name."""
    result = {}
    for name, module in model.named_modules():
        if isinstance(module, types):
            w = module.weight.detach()
            result[name] = 1.0 - int(torch.count_nonzero(w)) / w.numel()
    return result


def overall_sparsity(model: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES) -> float:
    """Fraction of zeros over all conv/linear weights together."""
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, types):
            w = module.weight.detach()
            zeros += w.numel() - int(torch.count_nonzero(w))
            total += w.numel()
    return zeros / total if total else 0.0


__all__ = [
    "Figures",
    "count_macs",
    "count_nonzero",
    "count_params",
    "evaluate",
    "gzip_bytes",
    "layer_sparsity",
    "measure",
    "overall_sparsity",
    "state_bytes",
    "weight_tensors",
]
