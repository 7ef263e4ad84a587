"""Importance scorers, kept apart from the pruners that use them (Torch-Pruning's split).

A scorer ranks; a pruner decides how much to cut. Two kinds:

- weight scorers for unstructured pruning return one score per weight:
  ``magnitude`` (|w|), ``activation`` (|w| · ‖x_in‖₂ of the input channel the weight reads, from
  validation data: an activation-aware magnitude), ``taylor`` (|w · ∂L/∂w| summed over batches);
- channel importances for structured pruning are Torch-Pruning ``Importance`` callables that
  score every channel of a dependency group: ``magnitude`` (L1 of the group's weights),
  ``taylor`` (first-order Taylor), ``activation`` (the mean |a| of the channel, or 1 − APoZ, the
  share of non-zero activations, recorded where the next layer reads the channel).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from edgekit.compress.layers import forward_passes_with_hooks

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _take(batches: Batches, limit: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i, batch in enumerate(batches):
        if i >= limit:
            break
        yield batch


# --- weight scorers (unstructured) --------------------------------------------------------------

def magnitude_scores(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """|w| of every weight."""
    return {name: m.weight.detach().abs().clone() for name, m in modules.items()}


@torch.no_grad()
def activation_scores(model: nn.Module, modules: dict[str, nn.Module], batches: Batches,
                      max_batches: int = 8) -> dict[str, torch.Tensor]:
    """|w| · ‖x_j‖₂, where x_j is the input channel (or feature) the weight multiplies."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def make_hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            if isinstance(module, nn.Linear):
                sq = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
                n = x.numel() // x.shape[-1]
            else:
                dims = [d for d in range(x.dim()) if d != 1]
                sq = x.pow(2).sum(dims)
                n = x.numel() // x.shape[1]
            sums[name] = sums.get(name, 0) + sq
            counts[name] = counts.get(name, 0) + n
        return hook

    hooks = [m.register_forward_pre_hook(make_hook(name)) for name, m in modules.items()]
    forward_passes_with_hooks(model, ((x,) for x, _ in _take(batches, max_batches)), hooks)
    scores = {}
    for name, m in modules.items():
        if name not in sums:  # never reached by the forward pass: fall back to magnitude
            scores[name] = m.weight.detach().abs().clone()
            continue
        norm = (sums[name] / counts[name]).sqrt()
        w = m.weight.detach().abs()
        if isinstance(m, nn.Linear):
            scores[name] = w * norm.view(1, -1)
        else:  # conv weight (out, in/groups, k...): scale by the input channel it reads
            groups = m.groups
            per_group = w.shape[1]
            shape = [1, per_group] + [1] * (w.dim() - 2)
            if groups == 1:
                scores[name] = w * norm.view(shape)
            else:
                out_per_group = w.shape[0] // groups
                idx = torch.arange(w.shape[0]) // out_per_group  # group of each output channel
                chan = idx.view(-1, 1) * per_group + torch.arange(per_group).view(1, -1)
                scores[name] = w * norm[chan].view(w.shape[0], per_group, *([1] * (w.dim() - 2)))
    return scores


def taylor_scores(model: nn.Module, modules: dict[str, nn.Module], batches: Batches,
                  loss_fn: LossFn | None = None, max_batches: int = 8) -> dict[str, torch.Tensor]:
    """|w · ∂L/∂w|, the first-order estimate of the loss change when the weight is zeroed."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    grads = {name: torch.zeros_like(m.weight) for name, m in modules.items()}
    was_training = model.training
    model.eval()
    try:
        for x, y in _take(batches, max_batches):
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            for name, m in modules.items():
                g = _weight_grad(m)
                if g is not None:
                    grads[name] += g.detach()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: (m.weight.detach() * grads[name]).abs() for name, m in modules.items()}


def _weight_grad(module: nn.Module) -> torch.Tensor | None:
    orig = getattr(module, "weight_orig", None)  # a pruning mask is attached: the parameter is weight_orig
    param = orig if orig is not None else module.weight
    return param.grad


# --- channel importances (structured) -----------------------------------------------------------

def channel_importance(kind: str, statistic: str = "mean_abs") -> Any:
    """A Torch-Pruning importance for ``kind``: "magnitude" (L1), "taylor" or "activation"."""
    import torch_pruning as tp

    if kind == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "activation":
        return _activation_importance_class()(statistic)
    raise ValueError(f"unknown importance {kind!r}")


def _activation_importance_class() -> type:
    import torch_pruning as tp
    from torch_pruning.pruner import function

    class ActivationChannelImportance(tp.importance.GroupMagnitudeImportance):
        """Scores a channel by its activation where the next layer reads it.

        ``record(model, batches)`` runs validation data and keeps, for each conv/linear input
        channel, the mean |a| and the fraction of exact zeros (APoZ). Statistic "mean_abs" scores
        mean |a|; "apoz" scores 1 − APoZ (a channel that is mostly zero after ReLU matters little).
        Statistics accumulate over every batch, not only the last one.
        """

        def __init__(self, statistic: str = "mean_abs") -> None:
            super().__init__(p=1, group_reduction="mean", normalizer="mean")
            self.statistic = statistic
            self.stats: dict[nn.Module, torch.Tensor] = {}

        @torch.no_grad()
        def record(self, model: nn.Module, batches: Batches, max_batches: int = 8) -> None:
            sums: dict[nn.Module, torch.Tensor] = {}
            nonzero: dict[nn.Module, torch.Tensor] = {}
            counts: dict[nn.Module, int] = {}

            def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                x = inputs[0].detach()
                if isinstance(module, nn.Linear):
                    flat = x.reshape(-1, x.shape[-1])
                else:
                    flat = x.transpose(0, 1).reshape(x.shape[1], -1).t()
                sums[module] = sums.get(module, 0) + flat.abs().sum(0)
                nonzero[module] = nonzero.get(module, 0) + (flat != 0).sum(0).float()
                counts[module] = counts.get(module, 0) + flat.shape[0]

            hooks = [m.register_forward_pre_hook(hook) for m in model.modules()
                     if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
            forward_passes_with_hooks(model, ((x,) for x, _ in _take(batches, max_batches)), hooks)
            self.stats = {}
            for module, total in sums.items():
                if self.statistic == "apoz":
                    self.stats[module] = nonzero[module] / counts[module]  # 1 − APoZ
                else:
                    self.stats[module] = total / counts[module]

        @torch.no_grad()
        def __call__(self, group: Any) -> torch.Tensor | None:
            scores, root_idxs = [], []
            for i, (dep, idxs) in enumerate(group):
                layer, fn = dep.target.module, dep.handler
                if fn not in (function.prune_conv_in_channels, function.prune_linear_in_channels):
                    continue
                stat = self.stats.get(layer)
                if stat is None:
                    continue
                if isinstance(layer, nn.Conv2d) and layer.groups > 1:  # depthwise: input = output channel
                    continue
                scores.append(stat[sorted(idxs)])
                root_idxs.append(group[i].root_idxs)
            if not scores:
                return None
            # average over every place the channel is read (a flattened channel feeds several features)
            n = len(group[0][1])
            total, seen = torch.zeros(n), torch.zeros(n)
            for score, roots in zip(scores, root_idxs):
                if any(r is None for r in roots):
                    continue
                index = torch.as_tensor(roots, dtype=torch.long)
                total.scatter_add_(0, index, score.float())
                seen.scatter_add_(0, index, torch.ones_like(score, dtype=torch.float32))
            return self._normalize(total / seen.clamp(min=1), self.normalizer)

    return ActivationChannelImportance


@contextlib.contextmanager
def accumulated_gradients(model: nn.Module, batches: Batches, loss_fn: LossFn | None = None,
                          max_batches: int = 8) -> Iterator[None]:
    """Gradients of the loss summed over a few batches, present inside the block (Taylor)."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for x, y in _take(batches, max_batches):
            loss_fn(model(x), y).backward()
        yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


__all__ = [
    "accumulated_gradients",
    "activation_scores",
    "channel_importance",
    "magnitude_scores",
    "taylor_scores",
]
