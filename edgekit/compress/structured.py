"""Structured (channel) pruning that really shrinks the graph, on Torch-Pruning's DepGraph.

DepGraph traces the model once and groups every tensor slice that must go together (a conv's
output channels, the BatchNorm after it, the next layer's input channels, a flatten's features),
so removing a channel keeps the model consistent. The pruned model is an ordinary module with
smaller layers: its exported ONNX/TFLite is smaller and faster.

What was removed is kept as Torch-Pruning's pruning history, a JSON list of
``[module_name, is_output_channels, [indices]]``. ``replay_channel_pruning(fresh_model,
example_inputs, history)`` replays it on a freshly built model, after which the pruned
``state_dict`` loads: no pickled module is ever needed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from edgekit.compress.finetune import resolve_loss
from edgekit.compress.importance import accumulated_gradients, channel_importance
from edgekit.compress.layers import output_layer, require_layers
from edgekit.compress.measure import PRUNABLE_TYPES
from edgekit.compress.technique import DATA_HINT, Outcome, StepContext
from edgekit.errors import RecipeError, UsageError

MAX_LAYER_RATIO = 0.95  # global ranking may cut a layer deeply, never to nothing


def _widths(model: nn.Module) -> dict[str, int]:
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            widths[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            widths[name] = m.out_features
    return widths


def _json_history(history: Sequence[Any]) -> list[list[Any]]:
    return [[str(name), bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in history]


def prune_channels(model: nn.Module, config: Any, context: StepContext) -> Outcome:
    """Remove channels as ``config`` (a PruneConfig with structure "channels") says; prune()'s transform."""
    if context.example_inputs is None:
        raise UsageError("channel pruning needs example_inputs (or data) to trace the model",
                         "pass example_inputs=(torch.zeros(1, 3, 224, 224),)")
    if config.importance in ("activation", "taylor") and context.data is None:
        raise UsageError(f"importance {config.importance!r} needs data to score on", DATA_HINT)
    example_inputs = tuple(context.example_inputs)
    widths_before = _widths(model)
    head = output_layer(model, example_inputs, PRUNABLE_TYPES)
    pruner, importance = _pruner(model, config, example_inputs, head)
    rounds = _rounds(model, config, context, pruner, importance)
    model.eval()
    widths_after = _widths(model)
    history = _json_history(pruner.pruning_history())
    details = {
        "rounds": rounds,
        "channels": {n: [widths_before[n], widths_after.get(n)] for n in widths_before},
        "kept_output_layer": head,
    }
    return Outcome(model, details=details, changes={"type": "channel_pruning", "history": history})


def _pruner(model: nn.Module, config: Any, example_inputs: tuple[torch.Tensor, ...], head: str | None) -> tuple[Any, Any]:
    """Torch-Pruning's MetaPruner for ``config``, never cutting the output layer ``head``; and its scorer."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    require_layers(model, list(config.ignore), (nn.Module,), "prune")
    require_layers(model, list(config.layer_ratios), PRUNABLE_TYPES, "prune")
    ignored = [modules[n] for n in config.ignore]
    if head is not None:
        ignored.append(modules[head])
        if head in config.layer_ratios or (config.layers and head in config.layers):
            raise RecipeError(f"prune: {head!r} is the model's output layer; its channels are the outputs",
                              "leave it out of layers / layer_ratios")
    if config.layers is not None:
        require_layers(model, list(config.layers), PRUNABLE_TYPES, "prune")
        ignored += [m for n, m in modules.items() if isinstance(m, PRUNABLE_TYPES) and n not in config.layers]
    importance = channel_importance(config.importance, config.statistic)
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs,
        importance=importance,
        global_pruning=config.scope == "global",
        pruning_ratio=config.ratio or 0.0,
        pruning_ratio_dict={modules[n]: r for n, r in config.layer_ratios.items()} or None,
        max_pruning_ratio=MAX_LAYER_RATIO,
        iterative_steps=config.steps,
        ignored_layers=ignored,
        round_to=config.round_to,
    )
    return pruner, importance


def _rounds(model: nn.Module, config: Any, context: StepContext, pruner: Any, importance: Any) -> list[dict[str, Any]]:
    """Prune in ``config.steps`` rounds, fine-tuning after each when ``config.finetune`` asks."""
    data = context.data
    loss = resolve_loss(config.finetune, context.loss_fn) if config.finetune is not None else (
        context.loss_fn or nn.functional.cross_entropy)
    rounds = []
    for step in range(1, config.steps + 1):
        if config.importance == "activation":
            importance.record(model, data.val, config.calibration_batches)
        if config.importance == "taylor":
            with accumulated_gradients(model, data.val, loss, config.calibration_batches):
                pruner.step()
        else:
            pruner.step()
        record: dict[str, Any] = {"step": step, "params": sum(p.numel() for p in model.parameters())}
        context.progress.note(f"channel pruning round {step}/{config.steps}: {record['params']:,} params")
        history = context.finetune(model, config.finetune, "prune", f"fine-tune after round {step}")
        if history is not None:
            record["finetune"] = history
        rounds.append(record)
    return rounds


def replay_channel_pruning(model: nn.Module, example_inputs: Sequence[torch.Tensor],
                           history: Sequence[Sequence[Any]]) -> nn.Module:
    """Remove the same channels from a freshly built ``model`` (then load the pruned state_dict)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=tuple(example_inputs))
    try:
        graph.load_pruning_history([[name, is_out, list(idxs)] for name, is_out, idxs in history])
    except (AttributeError, IndexError) as exc:
        raise RecipeError(f"the pruning history does not fit this model: {exc}",
                          "rebuild from the same architecture the history was recorded on") from None
    return model


__all__ = ["prune_channels", "replay_channel_pruning"]
