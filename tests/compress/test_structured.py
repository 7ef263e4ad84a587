"""Channel pruning: channels really removed, the exported graph smaller, history replayable."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from edgekit.compress import PruneConfig, prune, replay_channel_pruning, structured_prune
from edgekit.compress.quantize import export_onnx_fp32
from edgekit.errors import RecipeError


def _widths(model):
    return {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_channels_removed_and_onnx_smaller(cnn, example_input, tmp_path):
    before = _widths(cnn)
    export_onnx_fp32(cnn, example_input, tmp_path / "dense.onnx")
    model, report = structured_prune(cnn, example_input, 0.5)
    after = _widths(model)
    assert after["classifier.3"] == 10  # the output layer is never cut
    assert all(after[n] < before[n] for n in before if n != "classifier.3")
    assert report.after.params <= 0.35 * report.before.params
    assert report.after.macs < 0.5 * report.before.macs
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    export_onnx_fp32(model, example_input, tmp_path / "pruned.onnx")
    dense, pruned = (tmp_path / "dense.onnx").stat().st_size, (tmp_path / "pruned.onnx").stat().st_size
    assert pruned < 0.4 * dense
    weights = {i.name: list(i.dims) for i in onnx.load(str(tmp_path / "pruned.onnx")).graph.initializer}
    assert any(dims[:1] == [after["features.0.0"]] and len(dims) == 4 for dims in weights.values())


def test_history_is_json_and_replays_on_a_fresh_model(cnn, example_input):
    from edgekit.examples.fashion_cnn import build

    model, report = prune(cnn, PruneConfig(structure="channels", ratio=0.4, scope="layer"),
                          example_inputs=example_input)
    history = json.loads(json.dumps(report.changes["history"]))
    assert report.changes["type"] == "channel_pruning" and history
    fresh = replay_channel_pruning(build(pretrained=False), example_input, history)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


@pytest.mark.parametrize("importance, statistic", [("activation", "mean_abs"), ("activation", "apoz"),
                                                   ("taylor", "mean_abs")])
def test_activation_and_taylor_importance(cnn, data, importance, statistic):
    cfg = {"structure": "channels", "ratio": 0.3, "importance": importance, "statistic": statistic,
           "calibration_batches": 2}
    model, report = prune(cnn, cfg, data)
    assert report.after.params < 0.7 * report.before.params
    assert report.after.accuracy > 0.1


def test_activation_importance_removes_dead_channels(cnn, data):
    """A channel that never activates is the first an activation scorer removes."""
    with torch.no_grad():  # kill channel 3 of the first block: BN output always ≤ 0 → ReLU zero
        bn = cnn.features[0][1]
        bn.weight[3] = 0.0
        bn.bias[3] = -5.0
    model, report = prune(cnn, {"structure": "channels", "ratio": 0.0625, "scope": "layer", "importance": "activation",
                                "statistic": "apoz", "layers": ["features.0.0"]}, data)
    removed = [idx for name, is_out, idx in report.changes["history"] if name == "features.0.0" and is_out]
    assert removed == [[3]]


def test_fine_tune_between_rounds_recovers(cnn, data):
    cfg = {"structure": "channels", "ratio": 0.5, "steps": 2, "finetune": {"epochs": 1, "max_batches": 8, "lr": 2e-3}}
    model, report = prune(cnn, cfg, data)
    assert len(report.details["rounds"]) == 2
    assert report.after.accuracy > 0.6


def test_any_module_and_ignore(tiny, data):
    model, report = prune(tiny, {"structure": "channels", "ratio": 0.5, "ignore": ["stem.0"]}, data)
    assert model.stem[0].out_channels == 12
    assert model.body[0].out_channels < 24
    assert model.head[-1].out_features == 10


def test_errors(cnn, example_input):
    with pytest.raises(RecipeError, match="threshold applies to unstructured"):
        prune(cnn, {"structure": "channels", "threshold": 0.1}, example_inputs=example_input)
    with pytest.raises(RecipeError, match="'features.7' does not exist"):
        prune(cnn, {"structure": "channels", "ratio": 0.5, "ignore": ["features.7"]}, example_inputs=example_input)
    with pytest.raises(RecipeError, match="output layer"):
        prune(cnn, {"structure": "channels", "layer_ratios": {"classifier.3": 0.5}}, example_inputs=example_input)
