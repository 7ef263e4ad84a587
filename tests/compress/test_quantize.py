"""int8 quantization: weights on the int8 grid, artifacts smaller, accuracy kept, bad combos refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.compress import QuantizeConfig, quantize
from edgekit.compress.quantize import evaluate_file
from edgekit.errors import RecipeError, UsageError


def _int8_weights(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    weights = [(inits[n.input[0]], inits[n.input[1]]) for n in dq if n.input[0] in inits and inits[n.input[0]].ndim >= 2]
    return weights, inits


def test_ptq_onnx_per_channel(cnn, data, tmp_path):
    qmodel, report = quantize(cnn, QuantizeConfig(), data, out_dir=tmp_path)
    path = tmp_path / "model.int8.onnx"
    assert path.is_file()
    weights, inits = _int8_weights(path)
    assert len(weights) == 5  # 3 conv + 2 linear weights stored as int8
    for q, scale in weights:
        assert q.dtype == np.int8 and scale.shape == (q.shape[0],)  # per output channel
        assert int(q.min()) >= -127  # symmetric
    assert not [n for n, a in inits.items() if a.dtype == np.float32 and a.size > 1000]  # no float copy of a weight
    art = report.details["artifacts"]["onnx"]
    assert art["size_ratio"] <= 0.32
    assert report.after.artifact_bytes == path.stat().st_size
    assert report.before.accuracy - report.after.accuracy <= 0.01
    assert evaluate_file(path, data.val) == report.after.accuracy
    assert qmodel.float_model is cnn


@pytest.mark.parametrize("settings", [
    {"granularity": "per_tensor", "calibration": "percentile", "percentile": 99.99},
    {"activations": "symmetric", "calibration": "entropy", "calibration_samples": 64},
])
def test_ptq_options(cnn, data, tmp_path, settings):
    _, report = quantize(cnn, settings, data, out_dir=tmp_path)
    weights, _ = _int8_weights(tmp_path / "model.int8.onnx")
    if settings.get("granularity") == "per_tensor":
        assert all(scale.size == 1 for _, scale in weights)
    assert report.before.accuracy - report.after.accuracy <= 0.02


@pytest.mark.slow
@pytest.mark.tflite
def test_ptq_tflite_full_integer(cnn, data, tmp_path):
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    _, report = quantize(cnn, {"formats": ["tflite"]}, data, out_dir=tmp_path)
    path = tmp_path / "model.int8.tflite"
    interp = Interpreter(model_path=str(path))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    int8_tensors = [t for t in interp.get_tensor_details() if t["dtype"] == np.int8 and len(t["shape"]) >= 2]
    assert len(int8_tensors) >= 5
    assert report.details["artifacts"]["tflite"]["size_ratio"] <= 0.32
    assert report.before.accuracy - report.after.accuracy <= 0.01


@pytest.mark.slow
def test_qat_exports_int8_onnx(cnn, data, tmp_path):
    pytest.importorskip("litert_torch")
    cfg = {"mode": "qat", "training": {"epochs": 1, "max_batches": 4, "lr": 1e-5}}
    qmodel, report = quantize(cnn, cfg, data, out_dir=tmp_path)
    weights, _ = _int8_weights(tmp_path / "model.int8.onnx")
    assert len(weights) == 5 and all(q.dtype == np.int8 for q, _ in weights)
    assert report.details["training"][0]["epoch"] == 1
    assert report.before.accuracy - report.after.accuracy <= 0.02
    assert qmodel.program is not None


@pytest.mark.parametrize("settings, match", [
    ({"formats": ["tflite"], "calibration": "entropy"}, "applies to ONNX PTQ only"),
    ({"mode": "qat", "activations": "symmetric"}, "symmetric activations"),
    ({"precision": "int4"}, "precision"),
    ({"formats": []}, "formats"),
    ({"formats": ["onnx", "onnx"]}, "twice"),
    ({"percentile": 120}, "percentile"),
])
def test_bad_settings(cnn, data, settings, match):
    with pytest.raises(RecipeError, match=match):
        quantize(cnn, settings, data)


def test_needs_data(cnn):
    with pytest.raises(UsageError, match="calibrate"):
        quantize(cnn, {})


def test_fold_batchnorm_keeps_the_function_and_replays(cnn, example_input):
    from edgekit.compress.quantize import apply_bn_folding_structure, fold_batchnorm
    from edgekit.examples.fashion_cnn import build
    import torch

    x = torch.randn(3, 1, 28, 28)
    expected = cnn(x)
    pairs = fold_batchnorm(cnn, example_input)
    assert pairs == [("features.0.0", "features.0.1"), ("features.1.0", "features.1.1"), ("features.2.0", "features.2.1")]
    torch.testing.assert_close(cnn(x), expected, atol=1e-5, rtol=1e-4)
    fresh = apply_bn_folding_structure(build(pretrained=False), pairs)
    fresh.load_state_dict(cnn.state_dict())
    torch.testing.assert_close(fresh.eval()(x), expected, atol=1e-5, rtol=1e-4)
