"""`edgekit export`: an artifact, its manifest, parity and the artifact's own accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import ExitCode


@pytest.mark.slow
def test_export_int8_onnx_with_real_calibration_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "export", "example:fashion-cnn", "--format", "onnx", "--precision", "int8",
                 "--calibration", "example:fashion-mnist", "--eval", "example:fashion-mnist",
                 "--eval-limit", "1000", "-o", str(tmp_path), "--json"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["format"] == "onnx" and manifest["precision"] == "int8"
    artifact = tmp_path / "fashion-cnn.int8.onnx"
    assert artifact.stat().st_size == manifest["size_bytes"]
    on_disk = json.loads((tmp_path / "fashion-cnn.int8.onnx.manifest.json").read_text())
    assert on_disk["sha256"] == manifest["sha256"]
    accuracy = manifest["parity"]["accuracy"]
    assert accuracy["n"] == 1000 and accuracy["drop_pt"] < 1.0
    assert manifest["calibration"]["weight_rounding"]["method"] == "gptq"


def test_export_weight_rounding_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "export", "example:fashion-cnn", "--format", "tflite", "--precision", "int8",
                 "--calibration", "example:fashion-mnist", "--weight-rounding", "nearest", "-o", str(tmp_path), "--json"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["calibration"]["weight_rounding"] == {"method": "nearest", "grid": "per_channel"}


def test_export_rejects_bad_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "example:fashion-cnn", "--format", "coreml"])
    assert exc.value.code == ExitCode.USAGE
    code = main(["export", "example:fashion-cnn", "--format", "onnx", "--precision", "int8",
                 "--calibration", "example:imagenet", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "unknown example data 'example:imagenet'" in err
    assert list(tmp_path.iterdir()) == []
