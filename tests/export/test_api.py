"""export()'s contract: validation before work, atomic outputs, manifest, and the helpers deploy uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.errors import UsageError
from edgekit.export import get_format
from edgekit.export.api import choose, export, inspect, source_sha256


def test_unknown_format(export_case, tmp_path) -> None:
    case = export_case("mlp")
    with pytest.raises(UsageError, match="unknown format"):
        export(case.model, case.examples, "coreml", "fp32", out_dir=tmp_path)


def test_choose_validates_without_exporting() -> None:
    assert choose("onnx", "int8") is get_format("onnx")
    with pytest.raises(UsageError):
        choose("onnx", "int3")


def test_formats_declare_the_protocol() -> None:
    for name in ("onnx", "tflite"):
        fmt = get_format(name)
        assert fmt.name == name and fmt.suffix == f".{name}"
        assert fmt.precisions == ("fp32", "fp16", "int8")
        assert isinstance(fmt.available(), bool) and fmt.runtimes
    assert get_format("onnx").extra is None and get_format("tflite").extra == "tflite"


def test_bad_name_is_refused(export_case, tmp_path) -> None:
    case = export_case("mlp")
    with pytest.raises(UsageError, match="bad artifact name"):
        export(case.model, case.examples, "onnx", "fp32", out_dir=tmp_path, name="../escape")


def test_source_hash_follows_the_weights(export_case) -> None:
    model = export_case("mlp").model
    before = source_sha256(model)
    assert before == source_sha256(model)
    changed = type(model)().eval()
    changed.load_state_dict(model.state_dict())
    assert source_sha256(changed) == before
    with torch.no_grad():
        changed.net[0].bias[0] += 1e-6
    assert source_sha256(changed) != before


def test_default_name_and_manifest(export_case, tmp_path) -> None:
    case = export_case("residual")
    artifact = export(case.model, case.examples, "onnx", "fp32", out_dir=tmp_path)
    assert artifact.path == tmp_path / "residualconcat-fp32.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["residualconcat-fp32.onnx", "residualconcat-fp32.onnx.manifest.json"]
    assert artifact.parity["inputs"] == "example inputs + seeded random samples" and artifact.parity["n"] == 8
    assert inspect(artifact.path).sha256 == artifact.sha256


def test_eval_data_records_accuracy_of_the_artifact(export_case, tmp_path) -> None:
    case = export_case("mlp")
    x = case.parity[0]
    with torch.no_grad():
        y = case.model(torch.from_numpy(x)).argmax(1).numpy()  # labels = torch's own predictions
    artifact = export(case.model, case.examples, "onnx", "fp16", out_dir=tmp_path, eval_data=(x, y))
    acc = artifact.parity["accuracy"]
    assert acc["n"] == len(x) and acc["reference_accuracy"] == 1.0 and acc["accuracy"] >= 0.9
    assert artifact.parity["inputs"] == "eval data"


def test_inspect_unknown_suffix(tmp_path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(UsageError, match="unknown model file type"):
        inspect(path)


def test_calibration_accepts_dict_list_and_tensor(export_case, tmp_path) -> None:
    case = export_case("two_io")
    as_dict = {"image": case.calibration[0], "features": case.calibration[1]}
    a = export(case.model, case.examples, "onnx", "int8", calibration=as_dict, out_dir=tmp_path, name="d",
               check_parity=False)
    b = export(case.model, case.examples, "onnx", "int8", calibration=[torch.from_numpy(c) for c in case.calibration],
               out_dir=tmp_path, name="l", check_parity=False)
    assert a.calibration["sha256"] == b.calibration["sha256"]
    with pytest.raises(UsageError, match="2 inputs"):
        export(case.model, case.examples, "onnx", "int8", calibration=np.zeros((4, 3, 12, 12), np.float32),
               out_dir=tmp_path, name="x")
