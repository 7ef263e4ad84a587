"""Unstructured pruning: sparsity reached, masks while fine-tuning, finalize, scorers, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import PruneConfig, finalize, is_pruned, magnitude_prune, prune
from edgekit.compress.measure import layer_sparsity, overall_sparsity
from edgekit.errors import RecipeError, UsageError


def test_global_magnitude_reaches_the_ratio_and_finalizes(cnn, data):
    model, report = prune(cnn, PruneConfig(ratio=0.8), data)
    assert overall_sparsity(model) == pytest.approx(0.8, abs=1e-3)
    assert report.details["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert not is_pruned(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert report.after.gzip_bytes < 0.45 * report.before.gzip_bytes
    assert report.after.params == report.before.params  # zeros are still stored
    assert any("no faster" in n for n in report.notes)
    assert report.before.accuracy - report.after.accuracy < 0.25  # one shot, no fine-tuning: loose


def test_layer_scope_cuts_every_layer_equally(cnn):
    model, report = prune(cnn, {"ratio": 0.5, "scope": "layer"})
    for name, sparsity in layer_sparsity(model).items():
        assert sparsity == pytest.approx(0.5, abs=0.01), name
    assert report.before.accuracy is None  # no data: no accuracy figure


def test_layer_ratios_and_ignore(cnn):
    model, _ = prune(cnn, {"ratio": 0.5, "layer_ratios": {"classifier.1": 0.9}, "ignore": ["classifier.3"]})
    sparsity = layer_sparsity(model)
    assert sparsity["classifier.1"] == pytest.approx(0.9, abs=0.01)
    assert sparsity["classifier.3"] == 0.0


def test_threshold_prunes_small_weights(cnn):
    model, _ = prune(cnn, {"threshold": 0.02})
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach()
            assert bool(((w == 0) | (w.abs() >= 0.02)).all())


def test_iterative_pruning_keeps_masks_while_fine_tuning(cnn, data):
    cfg = {"ratio": 0.8, "steps": 3, "finetune": {"epochs": 1, "max_batches": 3}, "finalize": False}
    model, report = prune(cnn, cfg, data)
    rounds = [r["sparsity"] for r in report.details["rounds"]]
    assert rounds == sorted(rounds) and rounds[-1] == pytest.approx(0.8, abs=1e-3)
    assert rounds[0] == pytest.approx(1 - 0.2 ** (1 / 3), abs=1e-3)  # the same share of what is left each round
    assert is_pruned(model)
    zeros = {n: (m.weight == 0).clone() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # a big step: a pruned weight would move if unmasked
    for x, y in data.train:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        break
    finalize(model)
    assert not is_pruned(model)
    for n, m in model.named_modules():
        if n in zeros:
            assert bool((m.weight[zeros[n]] == 0).all()), n


@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_data_driven_scorers(cnn, data, importance):
    model, report = prune(cnn, {"ratio": 0.5, "importance": importance}, data)
    assert overall_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert report.before.accuracy - report.after.accuracy < 0.05


def test_activation_scorer_needs_data(cnn):
    with pytest.raises(UsageError, match="needs data"):
        prune(cnn, {"ratio": 0.5, "importance": "activation"})


def test_works_on_any_module(tiny, data):
    model, report = magnitude_prune(tiny, 0.7, data=data)
    assert overall_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    assert report.after.nonzero_params < report.before.nonzero_params


@pytest.mark.parametrize("config, match", [
    ({"ratio": 1.2}, "ratio: Input should be less than 1 .got 1.2"),
    ({"ratio": -0.1}, "ratio"),
    ({"ratio": 0.5, "threshold": 0.1}, "either ratio or threshold"),
    ({}, "give ratio"),
    ({"threshold": 0.1, "steps": 3}, "one-shot"),
    ({"ratio": 0.5, "scope": "everywhere"}, "scope"),
    ({"ratio": 0.5, "amount": 0.5}, "amount: Extra inputs are not permitted"),
    ({"ratio": 0.5, "layer_ratios": {"classifier.1": 1.5}}, r"layer_ratios\['classifier.1'\]"),
])
def test_impossible_amounts_are_typed_errors(cnn, config, match):
    with pytest.raises(RecipeError, match=match):
        prune(cnn, config)


def test_unknown_layer_is_named(cnn):
    with pytest.raises(RecipeError, match="'classifier.9' does not exist") as info:
        prune(cnn, {"ratio": 0.5, "layers": ["classifier.9"]})
    assert "classifier.1" in (info.value.hint or "")
    with pytest.raises(RecipeError, match="is a BatchNorm2d"):
        prune(cnn, {"ratio": 0.5, "layers": ["features.0.1"]})
