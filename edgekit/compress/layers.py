"""Selecting the layers a step acts on, by name, with errors that name what exists."""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from torch import nn

from edgekit.errors import RecipeError


def _close(name: str, candidates: Iterable[str]) -> str:
    options = list(candidates)
    near = difflib.get_close_matches(name, options, n=3)
    if near:
        return f"did you mean {', '.join(near)}?"
    shown = ", ".join(options[:8]) + (", ..." if len(options) > 8 else "")
    return f"layers of this kind: {shown or '(none)'}"


def require_layers(model: nn.Module, names: Sequence[str], types: tuple[type[nn.Module], ...], what: str) -> None:
    """Raise RecipeError when a name is not a module of ``model`` or not one of ``types``."""
    modules = dict(model.named_modules())
    eligible = [n for n, m in modules.items() if n and isinstance(m, types)]
    for name in names:
        if name not in modules:
            raise RecipeError(f"{what}: layer {name!r} does not exist in the model", _close(name, eligible))
        if not isinstance(modules[name], types):
            kinds = "/".join(t.__name__ for t in types)
            raise RecipeError(f"{what}: layer {name!r} is a {type(modules[name]).__name__}, not a {kinds}",
                              _close(name, eligible))


def select_layers(
    model: nn.Module,
    types: tuple[type[nn.Module], ...],
    include: Sequence[str] | None,
    ignore: Sequence[str],
    what: str,
) -> dict[str, nn.Module]:
    """Modules of ``types`` by name: ``include`` (all when None) minus ``ignore``, names checked."""
    if include is not None:
        require_layers(model, include, types, what)
    require_layers(model, ignore, (nn.Module,), what)
    chosen = {}
    for name, module in model.named_modules():
        if not name or not isinstance(module, types):
            continue
        if include is not None and name not in include:
            continue
        if name in ignore or any(name.startswith(prefix + ".") for prefix in ignore):
            continue
        chosen[name] = module
    if not chosen:
        raise RecipeError(f"{what}: no layer left to act on", "check `layers` and `ignore`")
    return chosen


def output_layer(model: nn.Module, example_inputs: Sequence, types: tuple[type[nn.Module], ...]) -> str | None:
    """The name of the last layer of ``types`` a forward pass runs: the model's head, usually."""
    import torch

    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod]))
             for m in model.modules() if isinstance(m, types)]
    forward_with_hooks(model, example_inputs, hooks)
    return order[-1] if order else None


def forward_with_hooks(model: nn.Module, example_inputs: Sequence, hooks: list) -> None:
    """One no-grad forward pass in eval mode that feeds ``hooks``; removes them and restores the mode."""
    forward_passes_with_hooks(model, [example_inputs], hooks)


def forward_passes_with_hooks(model: nn.Module, inputs: Iterable[Sequence], hooks: list) -> None:
    """No-grad forward passes in eval mode, one per argument tuple of ``inputs``, that feed ``hooks``;
    removes the hooks and restores the train/eval mode, also when a pass fails."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for args in inputs:
                model(*args)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


__all__ = ["forward_passes_with_hooks", "forward_with_hooks", "output_layer", "require_layers", "select_layers"]
