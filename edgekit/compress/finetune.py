"""Fine-tuning after any step: the user's data and loss, early stopping, a progress display.

``finetune(model, data, FinetuneConfig(epochs=3))`` trains in place and returns the model and a
StepReport. Pruning masks stay in force while it trains (they are forward pre-hooks), and
``constraints`` (e.g. a clustering codebook) are re-applied after every optimizer step. The same
loop (``train``) drives distillation and quantization-aware training.
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

import torch
from pydantic import Field
from torch import nn

from edgekit.compress.config import StepConfig
from edgekit.compress.measure import evaluate
from edgekit.compress.report import StepReport
from edgekit.compress.technique import Outcome, StepContext, Technique
from edgekit.errors import RecipeError, UsageError
from edgekit.refs import import_ref
from edgekit.report.progress import NULL_PROGRESS, LineProgress, Progress, RichProgress, make_progress
from edgekit.report.progress import as_progress as _as_progress

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AugmentConfig(StepConfig):
    """Per-sample augmentation of every training batch of N×C×H×W inputs, applied inside the loop.

    ``shift``: a random translation by up to that many pixels each way (the image is padded by
    repeating its border, then cropped back to its size); ``flip``: a horizontal flip with
    probability ½ (only where a mirrored input keeps its label). Draws come from torch's global
    generator, so ``torch.manual_seed`` makes them repeatable. In distillation the teacher sees
    the same augmented view as the student (function matching).
    """

    shift: int = Field(0, ge=0, le=64)
    flip: bool = False


def augment_batch(x: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """``x`` (N×C×H×W) with an independent random shift and flip per sample."""
    if x.dim() != 4 or (not config.shift and not config.flip):
        return x
    n, _, h, w = x.shape
    if config.shift:
        s = config.shift
        padded = nn.functional.pad(x, (s, s, s, s), mode="replicate")
        oy = torch.randint(0, 2 * s + 1, (n,)).tolist()
        ox = torch.randint(0, 2 * s + 1, (n,)).tolist()
        x = torch.stack([padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(n)])
    if config.flip:
        mirror = torch.rand(n) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


class FinetuneConfig(StepConfig):
    """How to fine-tune: epochs, optimizer, schedule, early stopping, and the loss.

    ``loss`` names a function ``loss(outputs, targets) -> scalar`` as ``pkg.module:fn`` (the
    Python API also takes a callable through ``finetune(..., loss_fn=...)``); cross-entropy by
    default. ``patience`` stops after that many epochs without a better validation accuracy and
    restores the best weights. ``max_batches`` caps the batches of an epoch (quick runs).
    ``augment`` adds per-sample shifts/flips to every training batch (see ``AugmentConfig``), on
    top of whatever the data loader does.
    """

    epochs: int = Field(3, ge=0)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    patience: int | None = Field(None, ge=1)
    max_batches: int | None = Field(None, ge=1)
    loss: str | None = None
    restore_best: bool = True
    augment: AugmentConfig | None = None


class Constraint(Protocol):
    """Something a step keeps true while training, re-applied after every optimizer step."""

    def apply(self, model: nn.Module) -> None: ...


# --- progress -----------------------------------------------------------------------------------

ProgressArg = Any  # edgekit.report.progress.Progress, a callable taking a str, a mode name, or None


def as_progress(progress: ProgressArg = None) -> Progress:
    """The shared Progress (``edgekit.report.progress``) for what a caller passed.

    None is silent (library code never decides how progress looks); a Progress or a callable is
    used as is; a mode name picks one: "auto" (rich bars on a terminal, plain lines otherwise),
    "rich", "plain" or "quiet".
    """
    if isinstance(progress, str):
        if progress == "quiet":
            return NULL_PROGRESS
        if progress == "auto":
            return make_progress()
        if progress == "plain":
            return LineProgress(sys.stderr)
        if progress == "rich":
            from rich.console import Console

            return RichProgress(Console(file=sys.stderr))
        raise UsageError(f"unknown progress mode {progress!r}", "use auto, rich, plain or quiet")
    return _as_progress(progress)


# --- the loop -----------------------------------------------------------------------------------

def _optimizer(params: Sequence[nn.Parameter], config: FinetuneConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, config: FinetuneConfig, steps: int) -> Any:
    if config.schedule == "onecycle" and steps > 0:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    if config.schedule == "cosine" and steps > 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return None


def _batches_per_epoch(data: Iterable[Any], config: FinetuneConfig) -> int | None:
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return config.max_batches
    return min(n, config.max_batches) if config.max_batches else n


def train(
    model: nn.Module,
    train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    config: FinetuneConfig,
    batch_loss: BatchLoss,
    *,
    extra_params: Sequence[nn.Parameter] = (),
    constraints: Sequence[Constraint] = (),
    progress: ProgressArg = None,
    label: str = "fine-tune",
    evaluate_model: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place with ``batch_loss(x, y)``; return one record per epoch.

    ``evaluate_model`` is what validation accuracy is measured on (default ``model``; a QAT
    program, for example, is evaluated as is). Early stopping restores the best epoch's weights.
    """
    show = as_progress(progress)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    opt = _optimizer(params, config)
    per_epoch = _batches_per_epoch(train_batches, config)
    total_steps = (per_epoch or 0) * config.epochs
    sched = _scheduler(opt, config, total_steps)
    steps_done = 0
    target = evaluate_model if evaluate_model is not None else model
    history: list[dict[str, Any]] = []
    best_acc, best_state, stale = -1.0, None, 0
    for epoch in range(config.epochs):
        start = time.perf_counter()
        name = f"{label} {epoch + 1}/{config.epochs}"
        model.train()
        total, seen = 0.0, 0
        with show.task(name, total=per_epoch, unit="batches") as task:
            for i, (x, y) in enumerate(train_batches):
                if config.max_batches is not None and i >= config.max_batches:
                    break
                if config.augment is not None:
                    x = augment_batch(x, config.augment)
                loss = batch_loss(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps_done += 1
                if sched is not None and steps_done < total_steps:  # OneCycle refuses a step past its end
                    sched.step()
                for c in constraints:
                    c.apply(model)
                total += float(loss.detach()) * int(y.shape[0])
                seen += int(y.shape[0])
                task.advance()
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(seen, 1)}
        if val_batches is not None:
            record["val_accuracy"] = evaluate(target, val_batches)
        record["seconds"] = round(time.perf_counter() - start, 2)
        history.append(record)
        summary = f"loss {record['train_loss']:.4f}"
        if "val_accuracy" in record:
            summary += f", val {100 * record['val_accuracy']:.2f}%"
        show.note(f"{name}: {summary}, {record['seconds']:.1f} s")
        if "val_accuracy" in record:
            if record["val_accuracy"] > best_acc:
                best_acc, stale = record["val_accuracy"], 0
                if config.restore_best:
                    best_state = copy.deepcopy(target.state_dict())
            else:
                stale += 1
                if config.patience is not None and stale >= config.patience:
                    record["early_stop"] = True
                    break
    if best_state is not None and history and history[-1].get("val_accuracy", best_acc) < best_acc:
        target.load_state_dict(best_state)
        history.append({"restored_epoch": max(history, key=lambda r: r.get("val_accuracy", -1))["epoch"]})
    model.eval()
    return history


def resolve_loss(config: FinetuneConfig, loss_fn: LossFn | None) -> LossFn:
    if loss_fn is not None:
        return loss_fn
    if config.loss:
        return import_ref(config.loss, RecipeError, what="finetune.loss")
    return nn.functional.cross_entropy


def _finetune(model: nn.Module, cfg: FinetuneConfig, context: StepContext) -> Outcome:
    return Outcome(model, details={"history": context.train(model, cfg, "fine-tune", context.constraints)})


FINETUNE = Technique("finetune", FinetuneConfig, _finetune, needs_data=True)


def finetune(
    model: nn.Module,
    data: Any,
    config: FinetuneConfig | dict[str, Any] | None = None,
    *,
    loss_fn: LossFn | None = None,
    constraints: Sequence[Constraint] = (),
    example_inputs: Sequence[torch.Tensor] | None = None,
    progress: ProgressArg = None,
) -> tuple[nn.Module, StepReport]:
    """Fine-tune ``model`` on ``data`` (a TrainData or DATA reference); returns it and a report.

    >>> model, report = finetune(model, "example:fashion-mnist", FinetuneConfig(epochs=2))
    """
    return FINETUNE.run(model, config, data, example_inputs=example_inputs, loss_fn=loss_fn, progress=progress,
                        constraints=constraints)


__all__ = ["FINETUNE", "AugmentConfig", "Constraint", "FinetuneConfig", "augment_batch", "as_progress", "finetune", "train"]
