"""Recipes: a YAML list of compression steps, validated up front, run in order.

    steps:
      - distill: {student: edgekit.examples.fashion_cnn:FashionCNN, student_kwargs: {widths: [8, 16, 32]}}
      - prune: {structure: channels, ratio: 0.5}
      - finetune: {epochs: 3}
      - quantize: {precision: int8}

(a bare list of steps works too). Each step is a mapping with one key, the step's kind, whose
value is that kind's config (``PruneConfig``, ``FinetuneConfig``, ``QuantizeConfig``,
``ClusterConfig``, ``DistillConfig``, ``LowRankConfig``). Every step is validated before anything
runs; an error names the step (numbered from 1), its kind and the field.

While a recipe runs, unstructured pruning masks stay attached so that a later ``finetune`` cannot
regrow pruned weights, and a clustering codebook is re-imposed after every fine-tuning step; the
runner makes masks permanent before steps that need plain weights and at the end. ``quantize``
must be the last step.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from edgekit.compress.config import StepConfig
from edgekit.compress.distill import DISTILL, DistillConfig
from edgekit.compress.finetune import FINETUNE, Constraint, FinetuneConfig, ProgressArg, as_progress
from edgekit.compress.lowrank import LOW_RANK, LowRankConfig
from edgekit.compress.nonlinear import CLUSTER, ClusterConfig, codebook_constraint
from edgekit.compress.prune import PRUNE, PruneConfig, finalize, is_pruned
from edgekit.compress.quantize import QuantizeConfig, quantize
from edgekit.compress.report import StepReport
from edgekit.compress.technique import StepContext
from edgekit.errors import RecipeError

StepRun = Callable[[nn.Module, Any, StepContext], "tuple[nn.Module, StepReport]"]


def _prune_in_recipe(model: nn.Module, cfg: PruneConfig, context: StepContext) -> tuple[nn.Module, StepReport]:
    if cfg.structure == "unstructured":
        cfg = cfg.model_copy(update={"finalize": False})  # masks stay until the recipe ends
    return PRUNE.apply(model, cfg, context)


def _quantize_in_recipe(model: nn.Module, cfg: QuantizeConfig, context: StepContext) -> tuple[nn.Module, StepReport]:
    # quantize keeps its own bookkeeping (its "after" is the int8 artifacts'): called as the API is
    quantized, report = quantize(model, cfg, context.data, example_inputs=context.example_inputs,
                                 out_dir=context.out_dir, name=context.name, progress=context.progress)
    return quantized.float_model, report


@dataclass(frozen=True)
class StepKind:
    """One kind of recipe step: its config, how it runs, and what the runner does around it.

    ``plain_weights(config)``: pruning masks must be made permanent before it runs;
    ``constraint``: what keeps its result true through later fine-tuning (a codebook);
    ``keeps_constraints``: it trains under the constraints of earlier steps (any other step ends
    them, as it changes the weights); ``last``: it must be the recipe's last step.
    """

    config: type[StepConfig]
    run: StepRun
    plain_weights: Callable[[Any], bool] = lambda config: True
    constraint: Callable[[nn.Module, Any], Constraint] | None = None
    keeps_constraints: bool = False
    last: bool = False


STEPS: dict[str, StepKind] = {
    "prune": StepKind(PruneConfig, _prune_in_recipe, plain_weights=lambda config: config.structure == "channels"),
    "finetune": StepKind(FinetuneConfig, FINETUNE.apply, plain_weights=lambda config: False, keeps_constraints=True),
    "quantize": StepKind(QuantizeConfig, _quantize_in_recipe, last=True),
    "cluster": StepKind(ClusterConfig, CLUSTER.apply, constraint=codebook_constraint),
    # a new student starts from plain weights; a self-distilling fine-tune keeps the pruning masks
    "distill": StepKind(DistillConfig, DISTILL.apply, plain_weights=lambda config: config.teacher is None),
    "low_rank": StepKind(LowRankConfig, LOW_RANK.apply),
}
STEP_CONFIGS: dict[str, type[StepConfig]] = {kind: step.config for kind, step in STEPS.items()}
ALIASES = {"lowrank": "low_rank", "fine_tune": "finetune", "quantise": "quantize"}


@dataclass(frozen=True)
class Step:
    kind: str
    config: StepConfig

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.config.model_dump(exclude_defaults=True)}


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    name: str | None = None
    source: str | None = None  # the file it came from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [s.to_dict() for s in self.steps]}


def parse_recipe(data: Any, source: str | None = None) -> Recipe:
    """Validate a recipe given as data (a list of steps, or a mapping with ``steps``)."""
    name = None
    if isinstance(data, dict):
        unknown = set(data) - {"steps", "name", "description"}
        if unknown:
            raise RecipeError(f"recipe: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}",
                              "a recipe has `steps` (and optionally `name`, `description`)")
        name = data.get("name")
        data = data.get("steps")
    if not isinstance(data, list) or not data:
        raise RecipeError("recipe: expected a non-empty list of steps", "e.g. steps: [{prune: {ratio: 0.5}}]")
    steps = []
    for number, raw in enumerate(data, start=1):
        if isinstance(raw, str):
            raw = {raw: {}}
        if not isinstance(raw, dict) or len(raw) != 1:
            raise RecipeError(f"recipe step {number}: expected a mapping with one key, the step's kind",
                              f"e.g. - prune: {{ratio: 0.5}}; kinds: {', '.join(STEP_CONFIGS)}")
        (kind, body), = raw.items()
        kind = ALIASES.get(str(kind), str(kind))
        if kind not in STEP_CONFIGS:
            near = difflib.get_close_matches(kind, list(STEP_CONFIGS), n=1)
            raise RecipeError(f"recipe step {number}: unknown step kind {kind!r}",
                              f"did you mean {near[0]}?" if near else f"kinds: {', '.join(STEP_CONFIGS)}")
        if body is not None and not isinstance(body, (dict, StepConfig)):
            raise RecipeError(f"recipe step {number} ({kind}): expected a mapping of settings, got {type(body).__name__}",
                              f"e.g. - {kind}: {{...}}")
        config = STEP_CONFIGS[kind].parse(body, f"recipe step {number} ({kind})")
        steps.append(Step(kind, config))
    for number, step in enumerate(steps, start=1):
        if STEPS[step.kind].last and number != len(steps):
            raise RecipeError(f"recipe step {number} ({step.kind}): {step.kind} must be the last step",
                              "later steps would change the weights the int8 artifacts were made from")
        if step.kind == "distill":
            _check_distill_roles(step.config, number)
    return Recipe(tuple(steps), name=name, source=source)


def _check_distill_roles(config: Any, number: int) -> None:
    """A recipe's distill step names a new student, or fine-tunes the current model from the original."""
    if not config.student and not config.teacher:
        raise RecipeError(f"recipe step {number} (distill): student: field required",
                          "name the student's factory, e.g. student: mypkg.models:small_cnn "
                          "(or teacher: original to fine-tune the current model from the recipe's input model)")
    if config.student and config.teacher:
        raise RecipeError(f"recipe step {number} (distill): student: and teacher: original exclude each other",
                          "keep student: to train a new model, or teacher: original to fine-tune this one")


def load_recipe(path: str | Path | Recipe | list | dict) -> Recipe:
    """Read and validate a recipe from a YAML file (or pass data/Recipe through parse_recipe)."""
    if isinstance(path, Recipe):
        return path
    if isinstance(path, (list, dict)):
        return parse_recipe(path)
    import yaml

    file = Path(path)
    if not file.is_file():
        raise RecipeError(f"recipe file not found: {file}", "pass the path of a YAML recipe")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise RecipeError(f"recipe {file}: invalid YAML{where}: {getattr(exc, 'problem', exc)}",
                          "check the indentation and the colons") from None
    return parse_recipe(data, source=str(file))


def run_recipe(
    model: nn.Module,
    recipe: Recipe | str | Path | list | dict,
    data: Any,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    out_dir: str | Path | None = None,
    name: str = "model",
    loss_fn: Callable | None = None,
    progress: ProgressArg = None,
) -> tuple[nn.Module, list[StepReport]]:
    """Run every step of ``recipe`` on ``model`` (changed in place; a distill step swaps in the student).

    Returns the final float model (masks made permanent) and one StepReport per step. With
    ``out_dir``, a quantize step writes its int8 artifacts there.
    """
    from edgekit.data.training import train_data

    recipe = load_recipe(recipe)
    data = train_data(data)
    _check_data(recipe, data)
    show = as_progress(progress)
    if example_inputs is None:
        example_inputs = (data.sample_inputs(1),)
    context = StepContext(data, example_inputs, loss_fn, show, out_dir=out_dir, name=name,
                          original=_original_if_taught(model, recipe))
    reports: list[StepReport] = []
    for number, step in enumerate(recipe.steps, start=1):
        show.note(f"step {number}/{len(recipe.steps)}: {step.kind}")
        kind = STEPS[step.kind]
        if kind.plain_weights(step.config) and is_pruned(model):
            finalize(model)
        if not kind.keeps_constraints:
            context.constraints = []
        try:
            model, report = kind.run(model, step.config, context)
        except RecipeError as exc:
            if exc.message.startswith("recipe step"):
                raise
            raise RecipeError(f"recipe step {number} ({step.kind}): {exc.message}", exc.hint) from None
        report.index = number
        if kind.constraint is not None:
            context.constraints = [kind.constraint(model, step.config)]
        reports.append(report)
        show.note(report.summary())
    if is_pruned(model):
        finalize(model)
    return model.eval(), reports


def _original_if_taught(model: nn.Module, recipe: Recipe) -> nn.Module | None:
    """A frozen copy of the input model when a step distils from it (``teacher: original``)."""
    if not any(s.kind == "distill" and s.config.teacher for s in recipe.steps):  # type: ignore[attr-defined]
        return None
    return copy.deepcopy(model).eval()


def _check_data(recipe: Recipe, data: Any) -> None:
    """Before any step runs: unlabeled data is for distill only, and every transfer: set exists."""
    from edgekit.data.training import check_data_reference

    for number, step in enumerate(recipe.steps, start=1):
        where = f"recipe step {number} ({step.kind})"
        if step.kind != "distill":
            data.require_labels(where)
        elif step.config.transfer:  # type: ignore[attr-defined]
            check_data_reference(step.config.transfer, f"{where}: transfer")  # type: ignore[attr-defined]


__all__ = ["ALIASES", "Recipe", "STEPS", "STEP_CONFIGS", "Step", "StepKind", "load_recipe", "parse_recipe", "run_recipe"]
