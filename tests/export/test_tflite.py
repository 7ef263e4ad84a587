"""TFLite export (the [tflite] extra): every coverage model × precision, parity in the runner's path."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from edgekit.errors import MissingDependencyError, UnsupportedOpError, UnsupportedPrecisionError, UsageError
from edgekit.export import get_format
from edgekit.export.api import export
from tests.export.conftest import MODELS, check_manifest

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None, reason="needs the [tflite] extra"),
]
PRECISIONS = ("fp32", "fp16", "int8")


def _ops(path) -> dict[str, int]:
    """Operator counts of a .tflite, read from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    sg = model.Subgraphs(0)
    counts: dict[str, int] = {}
    for i in range(sg.OperatorsLength()):
        oc = model.OperatorCodes(sg.Operators(i).OpcodeIndex())
        name = names[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())]
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_export_matches_torch(exported, model: str, precision: str) -> None:
    case, artifact = exported("tflite", model, precision)
    p = artifact.parity
    assert p["passed"], p.get("warning")
    assert p["n"] == 16 and p["runtime"]["name"] in ("ai_edge_litert", "tflite_runtime", "tensorflow")
    bound = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.15}[precision]
    assert p["max_abs_diff"] <= bound * p["scale"] + 1e-4
    if p["top1_agreement"] is not None and precision != "int8":
        assert p["top1_agreement"] == 1.0
    data = check_manifest(case, artifact)
    assert data["format"] == "tflite" and data["precision"] == precision
    assert len(artifact.inputs) == len(case.examples)
    assert [t.shape for t in artifact.inputs] == [list(s) for s in case.shapes]
    if precision == "int8":
        # full-integer: int8 tensors at the boundary, their scale/zero-point in the manifest
        assert all(t.dtype == "int8" and t.quantization for t in artifact.inputs + artifact.outputs)
        assert artifact.io_quantization()["inputs"]
        assert artifact.calibration["n_samples"] == 128 and artifact.calibration["method"] == "histogram"
    else:
        assert all(t.dtype == "float32" for t in artifact.inputs + artifact.outputs)
    assert not any(".partial" in f.name for f in artifact.path.parent.iterdir())


def test_int8_graph_is_integer_and_free_of_layout_ops(exported) -> None:
    """ReLU6 fused, SAME padding folded, no float islands: what makes int8 fast."""
    _, artifact = exported("tflite", "depthwise", "int8")
    ops = _ops(artifact.path)
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops
    # the stride-2 stem's symmetric padding is not TF-SAME and keeps its (int8) PAD; the
    # ZeroPad2d blocks fold into the depthwise convs
    assert ops.get("PAD", 0) == 1 and ops.get("TRANSPOSE", 0) == 1  # + the NCHW input's transpose
    assert ops["DEPTHWISE_CONV_2D"] == 2 and ops["CONV_2D"] == 3
    _, plain = exported("tflite", "depthwise", "int8", optimize=False)
    plain_ops = _ops(plain.path)
    assert plain_ops.get("PAD", 0) + plain_ops.get("TRANSPOSE", 0) > ops["PAD"] + ops["TRANSPOSE"]
    assert plain.parity["max_abs_diff"] == pytest.approx(artifact.parity["max_abs_diff"], abs=1e-6)
    _, residual = exported("tflite", "residual", "int8")
    ops = _ops(residual.path)
    assert "DEQUANTIZE" not in ops and ops.get("QUANTIZE", 0) <= 1  # add and concat stay integer


def test_int8_float_io_option(exported) -> None:
    case, artifact = exported("tflite", "two_io", "int8", io_dtype="float32")
    assert all(t.dtype == "float32" and t.quantization is None for t in artifact.inputs + artifact.outputs)
    _, int_io = exported("tflite", "two_io", "int8")
    ops, int_ops = _ops(artifact.path), _ops(int_io.path)
    assert ops["QUANTIZE"] - int_ops.get("QUANTIZE", 0) == 2  # one per input
    assert ops["DEQUANTIZE"] - int_ops.get("DEQUANTIZE", 0) == 2  # one per output
    assert artifact.parity["passed"]
    assert abs(artifact.parity["max_abs_diff"] - int_io.parity["max_abs_diff"]) < 1e-3 * int_io.parity["scale"]


def test_float_in_float_out_through_the_runner(exported) -> None:
    """The runner's session quantizes float feeds for int8 inputs and dequantizes the outputs."""
    from edgekit.export.parity import open_session

    case, artifact = exported("tflite", "cnn", "int8")
    session = open_session(artifact)
    x = case.parity[0][:1]
    out = session.run({artifact.inputs[0].name: x})
    assert out[0].dtype == np.float32 and out[0].shape == (1, 10)
    with torch.no_grad():
        ref = case.model(torch.from_numpy(x)).numpy()
    assert np.abs(out[0] - ref).max() <= 0.15 * np.abs(ref).max() + 1e-3


def test_dynamic_range_int8(exported) -> None:
    _, artifact = exported("tflite", "mlp", "int8", int8_mode="dynamic")
    assert artifact.inputs[0].dtype == "float32" and artifact.parity["passed"]
    assert artifact.calibration == {"method": "dynamic", "n_samples": 0}
    _, fp32 = exported("tflite", "mlp", "fp32")
    assert artifact.size_bytes < 0.5 * fp32.size_bytes


def test_channels_last_inputs(exported) -> None:
    case, artifact = exported("tflite", "cnn", "int8", channels_last=True)
    assert artifact.inputs[0].shape == [1, 16, 16, 3]
    assert any("NHWC" in note for note in artifact.notes)
    assert artifact.parity["passed"]  # parity transposed torch's NCHW samples for it
    _, nchw = exported("tflite", "cnn", "int8")
    # the input transpose is gone; the one before flatten (torch's C,H,W order) stays
    assert _ops(artifact.path).get("TRANSPOSE", 0) == _ops(nchw.path)["TRANSPOSE"] - 1


def test_sizes_shrink_with_precision(exported) -> None:
    _, fp32 = exported("tflite", "cnn", "fp32")
    _, fp16 = exported("tflite", "cnn", "fp16")
    _, int8 = exported("tflite", "cnn", "int8")
    assert int8.size_bytes < fp16.size_bytes < fp32.size_bytes
    assert int8.size_bytes < 0.45 * fp32.size_bytes


def test_inspect_reads_quantization_and_metadata(exported) -> None:
    _, artifact = exported("tflite", "two_io", "int8")
    seen = get_format("tflite").inspect(artifact.path)
    assert seen.precision == "int8" and seen.source_sha256 == artifact.source_sha256
    assert seen.inputs == artifact.inputs and seen.outputs == artifact.outputs
    assert seen.inputs[0].quantization["scale"] > 0


def test_dynamic_shapes_are_refused(export_case, tmp_path) -> None:
    case = export_case("cnn")
    with pytest.raises(UsageError, match="static shapes"):
        export(case.model, case.examples, "tflite", "fp32", out_dir=tmp_path, options={"dynamic_batch": True})
    assert list(tmp_path.iterdir()) == []


def test_unsupported_precision(export_case, tmp_path) -> None:
    case = export_case("mlp")
    with pytest.raises(UnsupportedPrecisionError) as info:
        export(case.model, case.examples, "tflite", "bf16", out_dir=tmp_path)
    assert "fp32, fp16, int8" in info.value.hint


class _Bucketize(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("edges", torch.tensor([-1.0, 0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(x, self.edges).float()


class _WithBucketize(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.binner = _Bucketize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.binner(self.fc(x))


def test_unsupported_op_names_op_module_and_alternatives(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsupportedOpError) as info:
        export(_WithBucketize().eval(), torch.randn(1, 4), "tflite", "fp32", out_dir=out, name="bucket")
    message = info.value.one_line()
    assert "bucketize" in message and "'binner'" in message and "_Bucketize" in message
    assert "formats that support it: onnx" in message
    assert list(out.iterdir()) == []
    # and ONNX really does export it
    artifact = export(_WithBucketize().eval(), torch.randn(1, 4), "onnx", "fp32", out_dir=out, name="bucket")
    assert artifact.parity["passed"]


def test_missing_extra_names_the_pip_command(export_case, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a))
    case = export_case("mlp")
    with pytest.raises(MissingDependencyError) as info:
        export(case.model, case.examples, "tflite", "fp32", out_dir=tmp_path)
    assert info.value.extra == "tflite" and "pip install 'edgekit[tflite]'" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_batch_one_graphs_calibrate_in_batches_with_the_same_result(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full batches go through a copy of the graph exported for pt2e.CALIBRATION_BATCH and its observer
    state is loaded into the batch-1 graph; with min/max observers (order-free) the file equals the
    one calibrated a sample per call, and every sample is counted once."""
    from edgekit.export import pt2e

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3)).eval()
    calibration = np.random.default_rng(1).standard_normal((37, 1, 8, 8)).astype(np.float32)
    options = {"calibration_method": "minmax", "weight_rounding": "nearest"}
    calls: list[int] = []
    real_observe = pt2e.observe
    monkeypatch.setattr(pt2e, "observe", lambda prepared, feeds, names, nhwc, batch, pad=False:
                        calls.append(batch) or real_observe(prepared, feeds, names, nhwc, batch, pad))
    batched = export(model, torch.zeros(1, 1, 8, 8), "tflite", "int8", calibration=calibration, options=options,
                     out_dir=tmp_path / "batched")
    assert calls == [pt2e.CALIBRATION_BATCH, 1]  # 32 in batches of 16, the last 5 one by one
    monkeypatch.setattr(pt2e, "CALIBRATION_BATCH", 10**6)  # too few samples to batch: one per call
    single = export(model, torch.zeros(1, 1, 8, 8), "tflite", "int8", calibration=calibration, options=options,
                    out_dir=tmp_path / "single")
    assert calls[2:] == [1]
    assert batched.calibration["n_samples"] == single.calibration["n_samples"] == 37
    # batched convolutions round differently in the last float bit: the ranges agree to that
    a, b = _quantization(batched.path), _quantization(single.path)
    assert a.keys() == b.keys() and len(a) >= 5  # input, conv, relu'd conv, linear, output
    for name, (scale, zero) in a.items():
        assert b[name][1] == zero and b[name][0] == pytest.approx(scale, rel=1e-5), name


def _quantization(path) -> dict[int, tuple[float, int]]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return {d["index"]: (float(d["quantization"][0]), int(d["quantization"][1])) for d in details
            if d["quantization"][0] != 0}  # by index: the export strips tensor names
