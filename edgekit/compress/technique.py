"""The envelope every compression step shares, so each technique supplies only its transform.

A step (``prune``, ``cluster``, ``low_rank``, ``distill``, ``finetune``) is a :class:`Technique`:
its kind, its config class and a *transform* that changes the model. :meth:`Technique.run` does
the bookkeeping, the same way for each: parse the config, resolve the data, measure the model
before, transform it (fine-tuning through :meth:`StepContext.finetune` where the config asks),
measure the result after, and build the :class:`StepReport`. A recipe calls
:meth:`Technique.apply` with a config it parsed up front and a context it shares across steps.

``quantize`` keeps its own bookkeeping (its "after" figures are the int8 artifacts', measured in
their runtimes); the recipe calls it through its public function.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from edgekit.compress.config import StepConfig
from edgekit.compress.measure import Figures, measure
from edgekit.compress.report import StepReport
from edgekit.errors import UsageError

DATA_HINT = "pass data (e.g. example:fashion-mnist)"


@dataclass
class StepContext:
    """What a step runs with besides the model and its config.

    ``data`` is a resolved ``TrainData`` (or None); ``val`` and ``before`` are set by the
    envelope before the transform runs: the batches accuracy is measured on (None without data,
    or for a technique that takes unlabeled data when the data has no labels) and the figures of
    the model before the step. ``student`` is distill's student module (else built from the
    config's factory); ``original`` is the model a recipe started from (a copy, the teacher of
    ``distill: {teacher: original}``); ``out_dir`` and ``name`` say where a step that writes artifacts
    (quantize, in a recipe) writes them.
    """

    data: Any = None
    example_inputs: Sequence[torch.Tensor] | None = None
    loss_fn: Callable | None = None
    progress: Any = None
    constraints: Sequence[Any] = ()
    student: nn.Module | None = None
    original: nn.Module | None = None
    out_dir: str | Path | None = None
    name: str = "model"
    val: Any = None
    before: Figures | None = None

    def train(self, model: nn.Module, config: Any, label: str, constraints: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Train ``model`` on the data with ``config`` (a FinetuneConfig) and the step's loss."""
        # finetune.py builds its own step on this module, so its loop is imported here, not at the top
        from edgekit.compress.finetune import resolve_loss, train

        loss = resolve_loss(config, self.loss_fn)
        return train(model, self.data.train, self.data.val, config, lambda x, y: loss(model(x), y),
                     constraints=constraints, progress=self.progress, label=label)

    def finetune(self, model: nn.Module, config: Any, what: str, label: str,
                 constraints: Sequence[Any] = ()) -> list[dict[str, Any]] | None:
        """A step's optional ``finetune:`` (None when it asks for no epochs); ``what`` names the step."""
        if config is None or config.epochs <= 0:
            return None
        if self.data is None:
            raise UsageError(f"{what}.finetune needs data", DATA_HINT)
        return self.train(model, config, label, constraints)


@dataclass
class Outcome:
    """What a transform returns: the model after it (distill's is the student) and its own report parts."""

    model: nn.Module
    details: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


Transform = Callable[[nn.Module, Any, StepContext], Outcome]


@dataclass(frozen=True)
class Technique:
    """One compression technique run as a step.

    ``needs_data``: the step refuses to run without data (with the UsageError ``no_data`` when
    given, else with the DataError ``train_data`` raises). ``unlabeled``: unlabeled data is
    accepted (nothing then measures accuracy). ``sample_inputs``: example inputs default to the
    data's first sample (else MACs are measured only when example inputs are given).
    """

    kind: str
    config: type[StepConfig]
    transform: Transform
    needs_data: bool = False
    no_data: str | None = None
    unlabeled: bool = False
    sample_inputs: bool = False

    def run(self, model: nn.Module, config: Any, data: Any = None, *,
            example_inputs: Sequence[torch.Tensor] | None = None, loss_fn: Callable | None = None,
            progress: Any = None, constraints: Sequence[Any] = (),
            student: nn.Module | None = None) -> tuple[nn.Module, StepReport]:
        """The step as the Python API calls it: ``config`` a dict or config, ``data`` a DATA reference."""
        from edgekit.compress.finetune import as_progress  # see StepContext.train
        from edgekit.data.training import train_data

        cfg = self.config.parse(config, self.kind)
        if data is None and self.needs_data and self.no_data:
            raise UsageError(self.no_data, DATA_HINT)
        resolved = train_data(data) if data is not None or self.needs_data else None
        context = StepContext(resolved, example_inputs, loss_fn, as_progress(progress), constraints, student)
        return self.apply(model, cfg, context)

    def apply(self, model: nn.Module, config: StepConfig, context: StepContext) -> tuple[nn.Module, StepReport]:
        """The envelope: measure before, transform, measure after, report."""
        data = context.data
        example_inputs = context.example_inputs
        if example_inputs is None and self.sample_inputs and data is not None:
            example_inputs = (data.sample_inputs(1),)
        val = None
        if data is not None and (data.labeled or not self.unlabeled):
            val = data.val
        start = time.perf_counter()
        before = measure(model, example_inputs, val)
        context = dataclasses.replace(context, example_inputs=example_inputs, val=val, before=before)
        outcome = self.transform(model, config, context)
        after = measure(outcome.model, example_inputs, val)
        return outcome.model, StepReport(self.kind, config.model_dump(), before, after, time.perf_counter() - start,
                                         details=outcome.details, changes=outcome.changes, notes=outcome.notes)


__all__ = ["DATA_HINT", "Outcome", "StepContext", "Technique", "Transform"]
