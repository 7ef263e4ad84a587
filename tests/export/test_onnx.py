"""ONNX export: every coverage model × precision, checked against torch in the runner's code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgekit.errors import ExportError, UnsupportedOpError, UnsupportedPrecisionError, UsageError
from edgekit.export import get_format
from edgekit.export.api import export
from tests.export.conftest import MODELS, check_manifest

PRECISIONS = ("fp32", "fp16", "int8")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_export_matches_torch(exported, model: str, precision: str) -> None:
    case, artifact = exported("onnx", model, precision)
    p = artifact.parity
    assert p["passed"], p.get("warning")
    assert p["n"] == 16
    assert p["max_abs_diff"] <= p["tolerance"]
    bound = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.15}[precision]  # relative to the output scale
    assert p["max_abs_diff"] <= bound * p["scale"] + 1e-4
    if p["top1_agreement"] is not None and precision != "int8":
        assert p["top1_agreement"] == 1.0
    assert len(artifact.inputs) == len(case.examples)
    assert len(artifact.outputs) == (2 if model == "two_io" else 1)
    data = check_manifest(case, artifact)
    assert data["format"] == "onnx" and data["precision"] == precision and data["opset"] == 18
    # one self-contained file: no external-data side file, no leftovers of the export
    assert not artifact.path.with_name(artifact.path.name + ".data").exists()
    assert not any(".partial" in f.name for f in artifact.path.parent.iterdir())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_graph_is_what_the_precision_says(exported, precision: str) -> None:
    _, artifact = exported("onnx", "depthwise", precision)
    model = onnx.load(str(artifact.path))
    ops = {n.op_type for n in model.graph.node}
    weights = {i.data_type for i in model.graph.initializer if len(i.dims) >= 2}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgekit.precision"] == precision
    assert meta["edgekit.source_sha256"] == artifact.source_sha256
    assert meta["edgekit.version"]
    inputs = [i.type.tensor_type.elem_type for i in model.graph.input]
    assert inputs == [onnx.TensorProto.FLOAT]  # callers always feed float32
    if precision == "fp32":
        assert weights == {onnx.TensorProto.FLOAT} and "QuantizeLinear" not in ops
    elif precision == "fp16":
        assert weights == {onnx.TensorProto.FLOAT16}
    else:
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert onnx.TensorProto.INT8 in weights  # per-channel int8 weights
        assert artifact.calibration["method"] == "minmax" and artifact.calibration["n_samples"] == 128
    # the exporter's per-node stack traces (local paths) are dropped; module scopes stay
    node_keys = {p.key for n in model.graph.node for p in n.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in node_keys and node_keys <= {"pkg.torch.onnx.name_scopes"}
    assert str(Path(torch.__file__).parent) not in artifact.path.read_bytes().decode("latin-1")


def test_int8_is_smaller_and_calibration_recorded(exported) -> None:
    _, fp32 = exported("onnx", "cnn", "fp32")
    _, int8 = exported("onnx", "cnn", "int8")
    assert int8.size_bytes < 0.7 * fp32.size_bytes
    assert int8.calibration["per_channel"] is True and int8.calibration["activation_type"] == "uint8"


def test_symmetric_activations_have_zero_point_zero(exported, export_case, tmp_path) -> None:
    _, artifact = exported("onnx", "cnn", "int8", activation_type="int8", activation_symmetric=True)
    model = onnx.load(str(artifact.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert artifact.parity["passed"]
    case = export_case("cnn")
    with pytest.raises(UsageError, match="activation_symmetric needs activation_type='int8'"):
        export(case.model, case.examples, "onnx", "int8", calibration=case.calibration, out_dir=tmp_path,
               options={"activation_symmetric": True})


def test_dynamic_int8_for_linear_models(exported) -> None:
    _, artifact = exported("onnx", "mlp", "int8", int8_mode="dynamic")
    model = onnx.load(str(artifact.path))
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    assert artifact.parity["passed"] and artifact.calibration["method"] == "dynamic"


def test_dynamic_int8_refuses_a_model_with_nothing_to_quantize(export_case, tmp_path) -> None:
    case = export_case("depthwise")

    class ConvOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    with pytest.raises(ExportError, match="nothing to quantize"):
        export(ConvOnly().eval(), case.examples, "onnx", "int8", out_dir=tmp_path, options={"int8_mode": "dynamic"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_methods_change_the_ranges(exported, method: str) -> None:
    _, base = exported("onnx", "residual", "int8")
    _, other = exported("onnx", "residual", "int8", calibration_method=method)
    assert other.calibration["method"] == method
    assert other.parity["passed"]
    assert other.sha256 != base.sha256  # a different method really gave different scales


def test_dynamic_batch(export_case, tmp_path) -> None:
    case = export_case("cnn")
    artifact = export(case.model, case.examples, "onnx", "fp32", out_dir=tmp_path, options={"dynamic_batch": True},
                      parity_inputs=case.parity)
    assert artifact.inputs[0].shape[0] == "batch" and artifact.outputs[0].shape[0] == "batch"
    from edgekit.export.parity import open_session

    session = open_session(artifact)
    out = session.run({"x": case.parity[0][:5]})
    assert out[0].shape == (5, 10)


def test_inspect_a_file_deployed_as_is(exported) -> None:
    _, artifact = exported("onnx", "two_io", "int8")
    seen = get_format("onnx").inspect(artifact.path)
    assert seen.precision == "int8" and seen.format == "onnx"
    assert seen.sha256 == artifact.sha256 and seen.size_bytes == artifact.size_bytes
    assert [t.name for t in seen.inputs] == ["image", "features"]
    assert [t.name for t in seen.outputs] == ["output_0", "output_1"]
    assert seen.source_sha256 == artifact.source_sha256


def test_inspect_guesses_precision_without_metadata(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(model, (torch.randn(1, 4),), str(path), dynamo=True, external_data=False, verbose=False)
    seen = get_format("onnx").inspect(path)
    assert seen.precision == "fp32" and seen.inputs[0].shape == [1, 4] and seen.source_sha256 is None


def test_unsupported_precision_names_the_supported_ones(export_case, tmp_path) -> None:
    case = export_case("mlp")
    with pytest.raises(UnsupportedPrecisionError, match="int4") as info:
        export(case.model, case.examples, "onnx", "int4", out_dir=tmp_path)
    assert "fp32, fp16, int8" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_static_int8_without_calibration_is_refused(export_case, tmp_path) -> None:
    case = export_case("mlp")
    with pytest.raises(UsageError, match="calibration"):
        export(case.model, case.examples, "onnx", "int8", out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_refused(export_case, tmp_path) -> None:
    case = export_case("mlp")
    with pytest.raises(UsageError, match="dynamic_batchh"):
        export(case.model, case.examples, "onnx", "fp32", out_dir=tmp_path, options={"dynamic_batchh": True})


class _Erfinv(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(torch.tanh(x) * 0.5)


class _WithErfinv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.squash = _Erfinv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squash(self.fc(x))


def test_unsupported_op_names_op_and_module_and_leaves_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("unrelated")
    with pytest.raises(UnsupportedOpError) as info:
        export(_WithErfinv().eval(), torch.randn(1, 4), "onnx", "fp32", out_dir=out, name="erf")
    message = info.value.one_line()
    assert "erf_inv" in message and "'squash'" in message and "_Erfinv" in message
    assert "no other edgekit format" in message
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_failed_export_keeps_the_previous_artifact(export_case, tmp_path) -> None:
    case = export_case("mlp")
    good = export(case.model, case.examples, "onnx", "fp32", out_dir=tmp_path, name="model", check_parity=False)
    before = good.path.read_bytes()

    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.erfinv(x)

    with pytest.raises(UnsupportedOpError):
        export(Broken().eval(), case.examples, "onnx", "fp32", out_dir=tmp_path, name="model")
    assert good.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.manifest.json"]
