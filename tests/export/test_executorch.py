"""ExecuTorch (.pte) export: parity with torch in ExecuTorch's own runtime (the runner's session),
the manifest, int8 static/dynamic, reading a .pte back, and refusals."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from edgekit.errors import UnsupportedPrecisionError, UsageError
from edgekit.export.api import export
from tests.export.conftest import MODELS, check_manifest

pytestmark = [
    pytest.mark.executorch,
    pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="needs the [executorch] extra"),
]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fp32_matches_torch_within_1e4_of_the_output_scale(exported, model: str) -> None:
    case, artifact = exported("executorch", model, "fp32")
    p = artifact.parity
    assert p["passed"] and p["runtime"]["name"] == "executorch"
    assert p["n"] == 16 and p["max_abs_diff"] <= 1e-4 * p["scale"]
    if p["top1_agreement"] is not None:
        assert p["top1_agreement"] == 1.0
    data = check_manifest(case, artifact)
    assert data["format"] == "executorch" and data["precision"] == "fp32" and artifact.path.suffix == ".pte"
    assert [t.shape for t in artifact.inputs] == [list(s) for s in case.shapes]
    assert all(t.dtype == "float32" for t in artifact.inputs + artifact.outputs)
    assert artifact.versions["converter"] == "executorch (XNNPACK)" and artifact.versions["executorch"]


@pytest.mark.parametrize("model", ["cnn", "depthwise", "residual", "two_io"])
def test_int8_static_is_calibrated_and_close_to_torch(exported, model: str) -> None:
    case, artifact = exported("executorch", model, "int8")
    p = artifact.parity
    assert p["passed"], p.get("warning")
    assert p["max_abs_diff"] <= 0.15 * p["scale"] + 1e-3
    assert artifact.calibration["n_samples"] == 128 and artifact.calibration["samples_used"] == 128
    assert artifact.calibration["weight_rounding"]["method"] == "gptq"
    # XNNPACK's int8 program keeps float inputs and outputs: the quantize/dequantize are inside
    assert all(t.dtype == "float32" and t.quantization is None for t in artifact.inputs + artifact.outputs)
    assert check_manifest(case, artifact)["calibration"]["method"] == "histogram"


def test_int8_weights_make_the_file_smaller(exported) -> None:
    _, fp32 = exported("executorch", "mlp", "fp32")
    _, int8 = exported("executorch", "mlp", "int8")
    # 8,906 parameters: 35.6 KB of fp32 weights, 8.9 KB as int8 (+ scales and the program itself)
    assert int8.size_bytes < 0.5 * fp32.size_bytes


def test_int8_dynamic_needs_no_calibration(tmp_path, export_case) -> None:
    case = export_case("mlp")
    artifact = export(case.model, case.examples, "executorch", "int8", out_dir=tmp_path,
                      options={"int8_mode": "dynamic"}, parity_inputs=case.parity)
    assert artifact.calibration == {"method": "dynamic", "n_samples": 0}
    assert artifact.parity["passed"] and artifact.parity["max_abs_diff"] > 0  # it is quantized


def test_static_int8_without_calibration_is_refused_before_writing(tmp_path, export_case) -> None:
    case = export_case("cnn")
    with pytest.raises(UsageError, match="calibration"):
        export(case.model, case.examples, "executorch", "int8", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fp16_is_refused_naming_the_supported_precisions(tmp_path, export_case) -> None:
    case = export_case("cnn")
    with pytest.raises(UnsupportedPrecisionError) as info:
        export(case.model, case.examples, "executorch", "fp16", out_dir=tmp_path)
    assert "fp32, int8" in info.value.hint


def test_unknown_option_and_dynamic_batch_are_refused(tmp_path, export_case) -> None:
    case = export_case("cnn")
    with pytest.raises(UsageError, match="unknown ExecuTorch export option"):
        export(case.model, case.examples, "executorch", "fp32", out_dir=tmp_path, options={"opset": 17})
    with pytest.raises(UsageError, match="static shapes"):
        export(case.model, case.examples, "executorch", "fp32", out_dir=tmp_path, options={"dynamic_batch": True})


def test_a_pte_read_back_has_its_names_and_precision(exported) -> None:
    """The program's edgekit_metadata method carries what a .pte has no field for."""
    from edgekit.export.api import inspect

    case, artifact = exported("executorch", "two_io", "int8")
    read = inspect(artifact.path)
    assert read.format == "executorch" and read.precision == "int8"
    assert [t.name for t in read.inputs] == ["image", "features"]
    assert [t.name for t in read.outputs] == ["output_0", "output_1"]
    assert read.source_sha256 == artifact.source_sha256


def test_a_foreign_pte_gets_positional_names_and_a_note(tmp_path) -> None:
    """A .pte written by ExecuTorch directly (no edgekit metadata) still deploys."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgekit.export.api import inspect
    from edgekit.export.parity import open_session

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    x = torch.randn(2, 4)
    program = to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
    path = tmp_path / "plain.pte"
    path.write_bytes(program.to_executorch().buffer)
    artifact = inspect(path)
    assert [t.name for t in artifact.inputs] == ["input_0"] and artifact.inputs[0].shape == [2, 4]
    assert artifact.precision == "fp32" and any("no edgekit metadata" in n for n in artifact.notes)
    out = open_session(artifact, threads=1).run({"input_0": x.numpy()})
    np.testing.assert_allclose(out[0], model(x).detach().numpy(), atol=1e-5)


def test_the_runner_refuses_a_wrong_shape_with_a_bad_input_error(exported) -> None:
    from edgekit.export.parity import open_session
    from edgekit.resources import runner_module

    case, artifact = exported("executorch", "cnn", "fp32")
    session = open_session(artifact, threads=1)
    assert session.runtime["threads"] == 1 and "XnnpackBackend" in session.runtime["providers"]
    with pytest.raises(runner_module().RunnerError) as info:
        session.run({artifact.inputs[0].name: np.zeros((1, 3, 8, 8), np.float32)})
    assert info.value.kind == "bad_input"


def test_metadata_method_is_json_with_the_io_names(exported) -> None:
    from executorch.runtime import Runtime

    _, artifact = exported("executorch", "cnn", "fp32")
    program = Runtime.get().load_program(artifact.path)
    meta = json.loads(program.load_method("edgekit_metadata").execute([])[0])
    assert meta["inputs"] == ["x"] and meta["outputs"] == ["output"]
    assert meta["edgekit"]["precision"] == "fp32" and meta["edgekit"]["source_sha256"] == artifact.source_sha256
