"""The shared step envelope (edgekit.compress.technique), the recipe's one table, and the verbs' names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.compress.config import StepConfig
from edgekit.compress.recipe import STEP_CONFIGS, STEPS, parse_recipe
from edgekit.compress.technique import Outcome, StepContext, Technique
from edgekit.errors import DataError, ModelError, RecipeError, UsageError
from edgekit.outputs import write_json_atomic
from edgekit.refs import import_ref


class HalveConfig(StepConfig):
    width: int = 4


def _halve(model: nn.Module, cfg: HalveConfig, context: StepContext) -> Outcome:
    assert context.before is not None and context.before.params == 8 * 8 + 8
    return Outcome(nn.Linear(8, cfg.width), details={"width": cfg.width}, notes=["toy"])


HALVE = Technique("halve", HalveConfig, _halve)
NEEDY = Technique("needy", HalveConfig, _halve, needs_data=True, no_data="needy needs data")


def test_the_envelope_measures_before_and_after_and_reports() -> None:
    model, report = HALVE.run(nn.Linear(8, 8), {"width": 2}, example_inputs=(torch.zeros(1, 8),))
    assert isinstance(model, nn.Linear) and model.out_features == 2
    assert (report.kind, report.config, report.details, report.notes) == ("halve", {"width": 2}, {"width": 2}, ["toy"])
    assert (report.before.params, report.after.params) == (72, 18)
    assert (report.before.macs, report.after.macs) == (64, 16)
    assert report.before.accuracy is None and report.seconds >= 0


def test_the_envelope_parses_the_config_and_refuses_missing_data() -> None:
    with pytest.raises(RecipeError, match="halve: width"):
        HALVE.run(nn.Linear(8, 8), {"width": "wide"})
    with pytest.raises(UsageError, match="needy needs data"):
        NEEDY.run(nn.Linear(8, 8), {})


def test_every_recipe_kind_comes_from_the_one_table() -> None:
    assert STEP_CONFIGS == {kind: step.config for kind, step in STEPS.items()}
    assert set(STEPS) == {"prune", "finetune", "quantize", "cluster", "distill", "low_rank"}
    assert [kind for kind, step in STEPS.items() if step.last] == ["quantize"]
    with pytest.raises(RecipeError, match=r"recipe step 1 \(quantize\): quantize must be the last step"):
        parse_recipe(["quantize", "finetune"])


def test_verbs_and_modules_keep_their_names() -> None:
    import edgekit.compress.prune  # noqa: F401 - a second import must not rebind the verb to the module
    from edgekit.compress.finetune import FinetuneConfig
    from edgekit.compress.prune import PruneConfig

    for verb in ("prune", "quantize", "distill", "finetune", "cluster", "low_rank"):
        assert callable(getattr(edgekit.compress, verb)) and getattr(edgekit.compress, verb).__name__ == verb
    assert PruneConfig.__name__ == "PruneConfig" and FinetuneConfig.__name__ == "FinetuneConfig"
    assert callable(edgekit.compress) and callable(edgekit.deploy) and callable(edgekit.export)


def test_one_importer_raises_each_domain_its_own_error() -> None:
    assert import_ref("math:sqrt", ModelError) is __import__("math").sqrt
    with pytest.raises(RecipeError, match=r"^finetune.loss: cannot import no_such_mod_xyz"):
        import_ref("no_such_mod_xyz:f", RecipeError, what="finetune.loss")
    with pytest.raises(ModelError, match="^math has no attribute 'nope'$"):
        import_ref("math:nope", ModelError)
    with pytest.raises(DataError, match="math:pi is a float, not a function"):
        import_ref("math:pi", DataError, function=True)
    with pytest.raises(RecipeError, match="is not a reference of the form pkg.module:name"):
        import_ref("not a ref", RecipeError, what="distill.student")


def test_json_is_written_atomically(tmp_path) -> None:
    path = write_json_atomic(tmp_path / "new" / "x.json", {"b": np.float32(0.5), "a": np.arange(2), "p": tmp_path},
                             sort_keys=True)
    assert path.read_text() == f'{{\n  "a": [\n    0,\n    1\n  ],\n  "b": 0.5,\n  "p": "{tmp_path}"\n}}\n'
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})
    assert path.read_text().startswith("{") and [p.name for p in path.parent.iterdir()] == ["x.json"]
