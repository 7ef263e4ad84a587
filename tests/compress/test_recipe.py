"""Recipes: validation with step-numbered errors, and end-to-end runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import load_recipe, parse_recipe, run_recipe
from edgekit.compress.measure import overall_sparsity
from edgekit.compress.prune import is_pruned
from edgekit.errors import RecipeError

STUDENT = "edgekit.examples.fashion_cnn:FashionCNN"


def test_parse_a_valid_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: edge\n"
        "steps:\n"
        f"  - distill: {{student: '{STUDENT}', student_kwargs: {{widths: [8, 16, 32]}}}}\n"
        "  - prune: {structure: channels, ratio: 0.5}\n"
        "  - finetune: {epochs: 2}\n"
        "  - lowrank: {rank_ratio: 0.5}\n"
        "  - quantize: {precision: int8}\n"
    )
    recipe = load_recipe(path)
    assert [s.kind for s in recipe.steps] == ["distill", "prune", "finetune", "low_rank", "quantize"]
    assert recipe.name == "edge" and recipe.source == str(path)
    assert recipe.steps[1].config.ratio == 0.5
    assert parse_recipe([{"prune": {"ratio": 0.5}}, "finetune"]).steps[1].config.epochs == 3


@pytest.mark.parametrize("steps, match", [
    ([{"finetune": {}}, {"prune": {"ratio": 1.2}}], r"recipe step 2 \(prune\): ratio: Input should be less than 1 \(got 1.2\)"),
    ([{"prun": {"ratio": 0.5}}], r"recipe step 1: unknown step kind 'prun'"),
    ([{"quantize": {}}, {"finetune": {}}], r"recipe step 1 \(quantize\): quantize must be the last step"),
    ([{"distill": {}}], r"recipe step 1 \(distill\): student: field required"),
    ([{"prune": {"ratio": 0.5}, "finetune": {}}], r"recipe step 1: expected a mapping with one key"),
    ([{"finetune": {"epochs": -1}}], r"recipe step 1 \(finetune\): epochs: Input should be greater than or equal to 0"),
    ([{"low_rank": {"ranks": {"fc": 0}}}], r"recipe step 1 \(low_rank\): .*at least 1"),
    ([{"quantize": {"formats": ["coreml"]}}], r"recipe step 1 \(quantize\): formats.0"),
    ([{"finetune": [1, 2]}], r"recipe step 1 \(finetune\): expected a mapping of settings"),
    ([], "non-empty list of steps"),
])
def test_bad_recipes_name_the_step_and_field(steps, match):
    with pytest.raises(RecipeError, match=match):
        parse_recipe(steps)


def test_unknown_kind_suggests_and_yaml_errors(tmp_path):
    with pytest.raises(RecipeError) as info:
        parse_recipe([{"prun": {}}])
    assert "did you mean prune" in info.value.hint
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - prune: {ratio: 0.5\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="unknown top-level key"):
        parse_recipe({"step": []})


def test_runtime_errors_name_the_step(cnn, data):
    with pytest.raises(RecipeError, match=r"recipe step 2 \(low_rank\): .*exceeds the layer's full rank"):
        run_recipe(cnn, [{"finetune": {"epochs": 0}}, {"low_rank": {"ranks": {"classifier.1": 999}}}], data)
    with pytest.raises(RecipeError, match=r"recipe step 1 \(prune\): .*'fc9' does not exist"):
        run_recipe(cnn, [{"prune": {"ratio": 0.5, "layers": ["fc9"]}}], data)


def test_prune_finetune_keeps_masks_until_the_end(cnn, data):
    model, steps = run_recipe(cnn, [{"prune": {"ratio": 0.7}}, {"finetune": {"epochs": 1, "max_batches": 4}}], data)
    assert not is_pruned(model)
    assert overall_sparsity(model) == pytest.approx(0.7, abs=1e-3)  # fine-tuning did not regrow weights
    assert [s.index for s in steps] == [1, 2] and steps[1].after.accuracy > 0.8


def test_cluster_then_finetune_stays_on_the_codebook(cnn, data):
    model, _ = run_recipe(cnn, [{"cluster": {"clusters": 8}}, {"finetune": {"epochs": 1, "max_batches": 3}}], data)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.unique(m.weight).numel() <= 8


@pytest.mark.slow
def test_distill_prune_finetune_quantize_end_to_end(cnn, data, tmp_path):
    recipe = [
        {"distill": {"student": STUDENT, "student_kwargs": {"widths": [8, 16, 32], "hidden": 64},
                     "features": [{"student": "features.2", "teacher": "features.2"}],
                     "training": {"epochs": 2, "lr": 3e-3, "schedule": "onecycle"}}},
        {"prune": {"structure": "channels", "ratio": 0.25}},
        {"finetune": {"epochs": 1, "max_batches": 8}},
        {"quantize": {"formats": ["onnx"]}},
    ]
    model, steps = run_recipe(cnn, recipe, data, out_dir=tmp_path)
    assert [s.kind for s in steps] == ["distill", "prune", "finetune", "quantize"]
    assert steps[0].changes["type"] == "student" and steps[1].changes["type"] == "channel_pruning"
    assert model.features[0][0].out_channels < 8  # the student, pruned
    assert (tmp_path / "model.int8.onnx").is_file()
    assert steps[-1].after.accuracy > 0.6
