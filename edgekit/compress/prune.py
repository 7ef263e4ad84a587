"""Pruning: one step, two structures, three scorers.

``prune(model, PruneConfig(...), data)`` is the step. ``structure: unstructured`` zeroes single
weights through masks (``torch.nn.utils.prune`` reparametrization: ``weight_orig`` × ``weight_mask``)
that stay in force while fine-tuning and are made permanent by ``finalize(model)`` before export;
``structure: channels`` removes whole channels and really shrinks the graph (see ``structured.py``).
The scorer (``importance``: magnitude, activation, taylor; see ``importance.py``) only ranks; the
pruner decides how much to cut, globally or per layer, by ratio or by threshold, in one shot or
over several steps with fine-tuning between them.

Unstructured sparsity makes the weights compress well (gzip), but dense runtimes (ONNX Runtime,
TFLite/XNNPACK) multiply the zeros like any other number: it is not faster. Only channel pruning
makes the exported model smaller and faster.

>>> model, report = magnitude_prune(model, 0.8)                 # global, one shot, finalized
>>> model, report = prune(model, PruneConfig(ratio=0.8, steps=3, finetune={"epochs": 1}), data)
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgekit.compress.config import StepConfig
from edgekit.compress.finetune import FinetuneConfig, ProgressArg
from edgekit.compress.importance import activation_scores, magnitude_scores, taylor_scores
from edgekit.compress.layers import select_layers
from edgekit.compress.measure import PRUNABLE_TYPES, count_nonzero, count_params, layer_sparsity, overall_sparsity
from edgekit.compress.report import StepReport
from edgekit.compress.technique import DATA_HINT, Outcome, StepContext, Technique
from edgekit.errors import UsageError

UNSTRUCTURED_NOTE = ("unstructured sparsity shrinks the compressed (gzip) weights only: dense runtimes "
                     "(ONNX Runtime, TFLite/XNNPACK) run a sparse model no faster and its exported file "
                     "is as large as the dense one; prune channels (structure: channels) for speed")


class PruneConfig(StepConfig):
    """One pruning step.

    - ``ratio``: the fraction of weights (unstructured) or channels (channels) to remove, in
      [0, 1); or ``threshold`` (unstructured only): remove weights whose score is below it.
    - ``scope``: ``global`` ranks all chosen layers together; ``layer`` cuts ``ratio`` from each.
      ``layer_ratios`` sets a ratio for named layers (they are then cut on their own).
    - ``steps``: reach ``ratio`` over this many rounds (each removes the same share of what is
      left), fine-tuning with ``finetune`` after each round when it is given.
    - ``layers`` / ``ignore``: restrict by module name. Channel pruning never cuts the model's
      output layer.
    - ``importance``: magnitude, activation (``statistic`` mean_abs or apoz for channels) or
      taylor; activation and taylor read ``calibration_batches`` batches of validation data.
    - ``finalize``: make unstructured masks permanent at the end of the step (a recipe keeps them
      until its end so that a later fine-tune cannot regrow pruned weights).
    """

    structure: Literal["unstructured", "channels"] = "unstructured"
    importance: Literal["magnitude", "activation", "taylor"] = "magnitude"
    ratio: float | None = Field(None, ge=0, lt=1)
    threshold: float | None = Field(None, ge=0)
    scope: Literal["global", "layer"] = "global"
    layer_ratios: dict[str, float] = Field(default_factory=dict)
    layers: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    steps: int = Field(1, ge=1, le=100)
    finetune: FinetuneConfig | None = None
    statistic: Literal["mean_abs", "apoz"] = "mean_abs"
    calibration_batches: int = Field(8, ge=1)
    round_to: int | None = Field(None, ge=1)
    finalize: bool = True

    @model_validator(mode="after")
    def _check_amount(self) -> "PruneConfig":
        if self.ratio is not None and self.threshold is not None:
            raise ValueError("give either ratio or threshold, not both")
        if self.ratio is None and self.threshold is None and not self.layer_ratios:
            raise ValueError("give ratio (fraction to remove, e.g. 0.5) or threshold")
        for name, r in self.layer_ratios.items():
            if not 0 <= r < 1:
                raise ValueError(f"layer_ratios[{name!r}] must be in [0, 1) (got {r})")
        if self.structure == "channels" and self.threshold is not None:
            raise ValueError("threshold applies to unstructured pruning; channel pruning takes ratio")
        if self.threshold is not None and self.steps > 1:
            raise ValueError("threshold pruning is one-shot; use ratio with steps for iterative pruning")
        return self


# --- masks --------------------------------------------------------------------------------------

def is_pruned(model: nn.Module) -> bool:
    """True while any module carries a pruning mask (``finalize`` has not run)."""
    return torch_prune.is_pruned(model)


def finalize(model: nn.Module) -> nn.Module:
    """Make every pruning mask permanent: plain ``weight`` tensors with zeros, no hooks, no masks.

    Run before export and before saving: a masked module exports its hooks' arithmetic and stores
    both ``weight_orig`` and ``weight_mask``.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> None:
    """Attach ``mask`` to ``module.<name>``, combined with a mask already there."""
    if torch_prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
        mask = mask * getattr(module, f"{name}_mask")
        torch_prune.remove(module, name)
    torch_prune.custom_from_mask(module, name, mask)


# --- scoring and cutting ------------------------------------------------------------------------

def _scores(model: nn.Module, modules: dict[str, nn.Module], config: PruneConfig,
            context: StepContext) -> dict[str, torch.Tensor]:
    if config.importance == "magnitude":
        return magnitude_scores(modules)
    if context.data is None:
        raise UsageError(f"importance {config.importance!r} needs data to score on", DATA_HINT)
    if config.importance == "activation":
        return activation_scores(model, modules, context.data.val, config.calibration_batches)
    return taylor_scores(model, modules, context.data.val, context.loss_fn, config.calibration_batches)


def _cut(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Masks that remove the ``ratio`` lowest-scored weights among ``scores`` taken together."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = int(round(ratio * flat.numel()))
    keep = torch.ones_like(flat)
    if k > 0:
        keep[torch.topk(flat, k, largest=False).indices] = 0
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = keep[offset : offset + s.numel()].view_as(s)
        offset += s.numel()
    return masks


def _masks(scores: dict[str, torch.Tensor], config: PruneConfig, fraction: float) -> dict[str, torch.Tensor]:
    """Masks for this round; ``fraction`` (0..1] is how far along the schedule the round is."""
    if config.threshold is not None:
        return {name: (s >= config.threshold).float() for name, s in scores.items()}
    masks = {}
    own = {n: s for n, s in scores.items() if n in config.layer_ratios}
    rest = {n: s for n, s in scores.items() if n not in config.layer_ratios}
    for name, s in own.items():
        masks.update(_cut({name: s}, _scheduled(config.layer_ratios[name], fraction)))
    if rest and config.ratio is not None:
        target = _scheduled(config.ratio, fraction)
        if config.scope == "global":
            masks.update(_cut(rest, target))
        else:
            for name, s in rest.items():
                masks.update(_cut({name: s}, target))
    return masks


def _scheduled(ratio: float, fraction: float) -> float:
    """Sparsity after a share ``fraction`` of the rounds: each round removes the same share of what is left."""
    return 1.0 - (1.0 - ratio) ** fraction


def _unstructured(model: nn.Module, config: PruneConfig, context: StepContext) -> dict[str, Any]:
    modules = select_layers(model, PRUNABLE_TYPES, config.layers, config.ignore, "prune")
    rounds = []
    for step in range(1, config.steps + 1):
        scores = _scores(model, modules, config, context)
        for name, module in modules.items():  # weights already pruned are cut first, always
            current = getattr(module, "weight_mask", None)
            if current is not None:
                scores[name] = torch.where(current.bool(), scores[name], torch.full_like(scores[name], -1.0))
        masks = _masks(scores, config, step / config.steps)
        for name, mask in masks.items():
            apply_mask(modules[name], mask)
        record: dict[str, Any] = {"step": step, "sparsity": overall_sparsity(model)}
        context.progress.note(f"prune round {step}/{config.steps}: sparsity {100 * record['sparsity']:.1f}%")
        history = context.finetune(model, config.finetune, "prune", f"fine-tune after round {step}")
        if history is not None:
            record["finetune"] = history
        rounds.append(record)
    return {"rounds": rounds, "layers": list(modules)}


def _prune(model: nn.Module, cfg: PruneConfig, context: StepContext) -> Outcome:
    if cfg.structure == "channels":
        from edgekit.compress.structured import prune_channels

        return prune_channels(model, cfg, context)
    details = _unstructured(model, cfg, context)
    details["layer_sparsity"] = layer_sparsity(model)
    details["sparsity"] = overall_sparsity(model)
    if cfg.finalize:
        finalize(model)
    details["sparsity_all_params"] = 1.0 - count_nonzero(model) / max(count_params(model), 1)
    return Outcome(model, details=details, notes=[UNSTRUCTURED_NOTE])


PRUNE = Technique("prune", PruneConfig, _prune, sample_inputs=True)


def prune(
    model: nn.Module,
    config: PruneConfig | dict[str, Any],
    data: Any = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    loss_fn: Callable | None = None,
    progress: ProgressArg = None,
) -> tuple[nn.Module, StepReport]:
    """Prune ``model`` (in place for unstructured; channels may rebuild layers) and report it.

    ``data`` (a TrainData or DATA reference) is needed for activation/taylor scores, fine-tuning
    and the accuracy figures; without it the report has no accuracy.
    """
    return PRUNE.run(model, config, data, example_inputs=example_inputs, loss_fn=loss_fn, progress=progress)


def magnitude_prune(model: nn.Module, ratio: float, *, scope: str = "global", data: Any = None,
                    ignore: Sequence[str] = ()) -> tuple[nn.Module, StepReport]:
    """Remove the ``ratio`` smallest weights (|w|), globally or per layer, and finalize."""
    return prune(model, PruneConfig.parse({"ratio": ratio, "scope": scope, "ignore": list(ignore)}, "magnitude_prune"), data)


def activation_prune(model: nn.Module, ratio: float, calibration: Any, *, structure: str = "channels",
                     statistic: str = "mean_abs", example_inputs: Sequence[torch.Tensor] | None = None,
                     ignore: Sequence[str] = ()) -> tuple[nn.Module, StepReport]:
    """Remove the least active channels (mean |a| or APoZ over ``calibration`` data)."""
    cfg = PruneConfig.parse({"ratio": ratio, "importance": "activation", "structure": structure,
                             "statistic": statistic, "ignore": list(ignore)}, "activation_prune")
    return prune(model, cfg, calibration, example_inputs=example_inputs)


__all__ = [
    "PRUNE",
    "PruneConfig",
    "UNSTRUCTURED_NOTE",
    "activation_prune",
    "apply_mask",
    "finalize",
    "is_pruned",
    "magnitude_prune",
    "prune",
]
