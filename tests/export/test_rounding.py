"""GPTQ weight rounding before int8 export (edgekit.export.rounding)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgekit.errors import UsageError
from edgekit.export.api import export
from edgekit.export.rounding import gptq_round


def _grid(weight: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().double().reshape(weight.shape[0], -1)
    amax = w.abs().amax(1, keepdim=True) if per_channel else w.abs().max().expand(w.shape[0], 1)
    scale = amax / 127
    return w / scale, scale


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_land_on_the_int8_grid_the_converters_use(export_case, per_channel: bool) -> None:
    case = export_case("depthwise")
    rounded, summary = gptq_round(case.model, case.examples, case.calibration, per_channel=per_channel)
    convs = [n for n, m in rounded.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert summary.layers == len(convs) == 6 and summary.samples == 128 and not summary.skipped
    for name, module in rounded.named_modules():
        if name not in convs:
            continue
        q, _ = _grid(module.weight, per_channel)
        assert torch.allclose(q, q.round(), atol=1e-3), name  # integers ...
        assert q.abs().max() <= 127 + 1e-3
        top = q.abs().amax(1) if per_channel else q.abs().max()
        assert torch.allclose(top, torch.full_like(top, 127.0), atol=1e-3), name  # ... and max|q| = 127 keeps the scale
    # the original model is untouched
    assert not torch.equal(dict(case.model.named_modules())["head"].weight, dict(rounded.named_modules())["head"].weight)


def test_gptq_preserves_layer_outputs_better_than_nearest(export_case) -> None:
    case = export_case("cnn")
    _, summary = gptq_round(case.model, case.examples, case.calibration)
    # Σ E‖(W−Q)x‖² over layers on the calibration inputs, relative to round-to-nearest
    assert summary.output_error_ratio is not None and summary.output_error_ratio < 0.8


def test_skipped_modules_keep_their_weights(export_case) -> None:
    case = export_case("depthwise")
    rounded, summary = gptq_round(case.model, case.examples, case.calibration, skip_modules=["stem"])
    before, after = dict(case.model.named_modules()), dict(rounded.named_modules())
    assert torch.equal(before["stem.0"].weight, after["stem.0"].weight)
    assert not torch.equal(before["blocks.0.dw"].weight, after["blocks.0.dw"].weight)
    assert summary.layers == 5


def test_onnx_int8_stores_exactly_the_rounded_integers(export_case, tmp_path) -> None:
    """The exported int8 weights of the last Linear (no BatchNorm folded into it) are the GPTQ
    integers, not a re-rounding of them: the rounding survives the converter."""
    case = export_case("mlp")
    art = export(case.model, case.examples, "onnx", "int8", calibration=case.calibration, out_dir=tmp_path, name="mlp")
    assert art.calibration["weight_rounding"]["method"] == "gptq" and art.calibration["weight_rounding"]["layers"] == 3
    assert any("rounded by GPTQ on 128 calibration samples (3 layers" in note for note in art.notes)
    rounded, _ = gptq_round(case.model, case.examples, case.calibration)
    q_torch, _ = _grid(rounded.net[4].weight, True)
    model = onnx.load(str(art.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    int8 = [v for v in inits.values() if v.dtype == np.int8 and v.size == q_torch.numel()]
    assert len(int8) == 1
    stored = int8[0].astype(np.float64)
    stored = stored if stored.shape == tuple(q_torch.shape) else stored.T
    np.testing.assert_array_equal(stored, q_torch.round().numpy())
    nearest = export(case.model, case.examples, "onnx", "int8", calibration=case.calibration, out_dir=tmp_path,
                     name="mlp-nearest", options={"weight_rounding": "nearest"})
    assert nearest.calibration["weight_rounding"] == {"method": "nearest", "grid": "per_channel"}
    assert art.sha256 != nearest.sha256


def test_only_static_int8_is_rounded_and_bad_values_are_refused(export_case, tmp_path) -> None:
    case = export_case("mlp")
    dynamic = export(case.model, case.examples, "onnx", "int8", out_dir=tmp_path, name="dyn", options={"int8_mode": "dynamic"})
    assert "weight_rounding" not in (dynamic.calibration or {})
    with pytest.raises(UsageError, match="weight_rounding"):
        export(case.model, case.examples, "onnx", "int8", calibration=case.calibration, out_dir=tmp_path,
               name="bad", options={"weight_rounding": "stochastic"})


def test_tflite_int8_stores_exactly_the_rounded_integers(export_case, tmp_path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    case = export_case("mlp")
    art = export(case.model, case.examples, "tflite", "int8", calibration=case.calibration, out_dir=tmp_path, name="mlp")
    assert art.calibration["weight_rounding"]["method"] == "gptq"
    rounded, _ = gptq_round(case.model, case.examples, case.calibration)
    q_torch, _ = _grid(rounded.net[4].weight, True)
    interp = Interpreter(model_path=str(art.path))
    found = []
    for detail in interp.get_tensor_details():
        if detail["dtype"] == np.int8 and tuple(detail["shape"]) == tuple(q_torch.shape):
            found.append(interp.get_tensor(detail["index"]).astype(np.float64))
    assert len(found) == 1
    np.testing.assert_array_equal(found[0], q_torch.round().numpy())


def test_batchnorm_folded_later_keeps_the_integers(export_case, tmp_path) -> None:
    """A conv followed by BatchNorm: ONNX Runtime folds the BN into the conv before quantizing;
    the per-channel grid survives the folding (the stored integers are q · sign(γ))."""
    case = export_case("cnn")
    art = export(case.model, case.examples, "onnx", "int8", calibration=case.calibration, out_dir=tmp_path, name="cnn")
    rounded, _ = gptq_round(case.model, case.examples, case.calibration)
    conv, bn = rounded.features[0], rounded.features[1]
    q, _ = _grid(conv.weight, True)
    expected = (q.round() * torch.sign(bn.weight.detach().double()).unsqueeze(1)).reshape(conv.weight.shape).numpy()
    model = onnx.load(str(art.path))
    stored = [numpy_helper.to_array(i) for i in model.graph.initializer
              if i.data_type == onnx.TensorProto.INT8 and tuple(i.dims) == tuple(conv.weight.shape)]
    assert len(stored) == 1
    np.testing.assert_array_equal(stored[0].astype(np.float64), expected)
