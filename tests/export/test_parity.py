"""Parity and accuracy of artifacts: the comparison itself, strict mode, and the example CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.errors import ParityError, UsageError
from edgekit.export.api import export
from edgekit.export.parity import check_parity, compare_outputs, evaluate_artifact, run_artifact, tolerance_for


def test_compare_outputs_tolerance_follows_precision_and_scale() -> None:
    ref = [np.array([[10.0, -2.0, 0.5], [1.0, 3.0, -4.0]])]
    close = [ref[0] + 2e-3]
    assert compare_outputs(ref, close, "fp32")["passed"] is False  # 2e-3 > 1e-4 × 10 + 1e-5
    assert compare_outputs(ref, close, "fp16")["passed"] is True  # ≤ 2e-2 × 10 + 1e-3
    assert compare_outputs(ref, [ref[0] + 0.3], "fp16")["passed"] is False
    result = compare_outputs(ref, close, "fp32")
    assert result["tolerance"] == pytest.approx(tolerance_for("fp32", 10.0))
    assert result["max_abs_diff"] == pytest.approx(2e-3) and result["n"] == 2 and result["top1_agreement"] == 1.0


def test_compare_outputs_top1_and_multi_output() -> None:
    logits = np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.9], [0.2, 0.1]])
    flipped = logits.copy()
    flipped[2] = [0.9, 1.0]
    box = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
    result = compare_outputs([logits, box], [flipped, box + 0.01], "int8")
    assert result["top1_agreement"] == pytest.approx(0.75)  # the worst classifier-like output
    assert [o["index"] for o in result["outputs"]] == [0, 1]
    assert result["outputs"][1]["max_abs_diff"] == pytest.approx(0.01)
    assert result["passed"] is True  # 0.1 ≤ 0.2 × 3 + 1e-3


def test_compare_outputs_nan_fails() -> None:
    ref = [np.ones((2, 3))]
    bad = [np.full((2, 3), np.nan)]
    assert compare_outputs(ref, bad, "int8")["passed"] is False


def test_parity_catches_a_wrong_artifact_and_strict_raises(export_case, tmp_path) -> None:
    case = export_case("cnn")
    artifact = export(case.model, case.examples, "onnx", "fp32", out_dir=tmp_path, check_parity=False)
    other = type(case.model)().eval()  # same architecture, different weights
    result = check_parity(other, artifact, case.parity)
    assert result["passed"] is False and "differs from torch" in result["warning"]
    with pytest.raises(ParityError, match="max\\|Δ\\|"):
        check_parity(other, artifact, case.parity, strict=True)
    assert check_parity(case.model, artifact, case.parity)["passed"] is True


def test_export_strict_raises_but_keeps_the_artifact(export_case, tmp_path) -> None:
    case = export_case("mlp")
    wrong = [np.full((4, 32), 1e6, np.float32)]  # saturates int8 calibration ranges nowhere near these

    with pytest.raises(ParityError) as info:
        export(case.model, case.examples, "onnx", "int8", calibration=case.calibration, out_dir=tmp_path,
               name="mlp", parity_inputs=wrong, strict=True)
    assert "kept" in info.value.hint
    assert (tmp_path / "mlp.onnx").is_file() and (tmp_path / "mlp.onnx.manifest.json").is_file()


def test_multi_input_parity_by_torch_names_or_artifact_names(exported) -> None:
    case, artifact = exported("onnx", "two_io", "fp32")
    by_torch = check_parity(case.model, artifact, {"image": case.parity[0], "features": case.parity[1]})
    by_list = check_parity(case.model, artifact, case.parity)
    assert by_torch["passed"] and by_list["passed"] and by_torch["max_abs_diff"] == by_list["max_abs_diff"]
    outs = run_artifact(artifact, {"image": case.parity[0], "features": case.parity[1]})
    assert [o.shape for o in outs] == [(16, 5), (16, 2)]


def test_wrong_sample_shape_is_a_usage_error(export_case, tmp_path) -> None:
    case = export_case("cnn")
    with pytest.raises(UsageError, match="sample shape"):
        export(case.model, case.examples, "onnx", "int8", calibration=np.zeros((8, 3, 10, 10), np.float32),
               out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("tflite", marks=pytest.mark.tflite)])
def test_example_cnn_int8_accuracy(example_cnn, fmt: str, tmp_path) -> None:
    """The shipped Fashion-MNIST CNN keeps its accuracy in int8 (2,000 test images, own runtime)."""
    if fmt == "tflite":
        pytest.importorskip("litert_torch")
    from edgekit.data import load_fashion_mnist

    test = load_fashion_mnist("test", limit=2000)
    train = load_fashion_mnist("train", limit=2000)
    calib = train.x[np.random.default_rng(0).choice(len(train), 200, replace=False)]
    artifact = export(example_cnn, torch.zeros(1, 1, 28, 28), fmt, "int8", calibration=calib, out_dir=tmp_path,
                      eval_data=(test.x, test.y))
    acc = artifact.parity["accuracy"]
    assert acc["n"] == 2000 and acc["reference_accuracy"] > 0.88
    assert acc["drop_pt"] <= 0.5
    again = evaluate_artifact(artifact, test.x[:500], test.y[:500])
    assert again["n"] == 500 and 0.85 < again["accuracy"] <= 1.0
