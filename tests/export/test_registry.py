"""The format registry is the one list of formats: everything that depends on the formats reads
it, so a new format is its module, its table line and its runner backend."""

from __future__ import annotations

import pytest

from edgekit import export as registry
from edgekit.errors import UnsupportedPrecisionError
from edgekit.export import FORMATS, device_runtimes, format_for_file, get_format, int8_mode_names, suffixes
from edgekit.export.api import choose, export, inspect, source_sha256
from edgekit.export.converter import supported_elsewhere
from edgekit.resources import runner_module

TOY = "tests.export.toy_format:FORMAT"


def _export_parser_choices(dest: str) -> list[str]:
    from edgekit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["export"]
    return list(next(a for a in sub._actions if a.dest == dest).choices)


def test_everything_reads_the_registry() -> None:
    from edgekit.devices import KNOWN_FORMATS
    from edgekit.provision import DEFAULT_CANDIDATES, RUNTIME_PROJECTS

    runner = runner_module()
    for fmt in registry.formats():
        assert runner.FORMAT_RUNTIMES[fmt.name] == fmt.runtimes  # the runner backend is the third file
    assert KNOWN_FORMATS == tuple(FORMATS)
    assert list(RUNTIME_PROJECTS) == [r.name for r in device_runtimes()] == list(runner.KNOWN_RUNTIMES)
    assert RUNTIME_PROJECTS["ai_edge_litert"] == "ai-edge-litert"
    assert DEFAULT_CANDIDATES == ("onnxruntime", "ai_edge_litert", "tflite_runtime")  # tensorflow when asked for
    assert suffixes() == {".onnx": "onnx", ".tflite": "tflite", ".pte": "executorch"}
    assert _export_parser_choices("format") == ["onnx", "tflite", "executorch"]
    assert _export_parser_choices("int8_mode") == ["static", "dynamic", "full"] == int8_mode_names()


def test_a_third_format_is_one_module_and_one_table_line(monkeypatch, export_case, tmp_path) -> None:
    monkeypatch.setitem(FORMATS, "toy", TOY)  # the table line
    case = export_case("mlp")
    assert format_for_file("net.TOY") == "toy" and "toy_runtime" in [r.name for r in device_runtimes()]
    assert "toyish" in _export_parser_choices("int8_mode") and "toy" in _export_parser_choices("format")
    with pytest.raises(UnsupportedPrecisionError, match="toy does not support precision 'int8'") as info:
        choose("toy", "int8")
    assert info.value.hint == "choose one of: fp32"
    assert "toy" in supported_elsewhere("aten.bucketize", exclude="onnx")

    artifact = export(case.model, case.examples, "toy", "fp32", out_dir=tmp_path, name="net", check_parity=False)
    assert artifact.path == tmp_path / "net.toy" and artifact.manifest_path.is_file()
    assert (artifact.format, artifact.precision) == ("toy", "fp32")
    assert artifact.source_sha256 == source_sha256(case.model)
    assert artifact.versions["toy"] == "1.0" and artifact.versions["converter"] == "toy writer"
    assert artifact.versions["runtime"] == "toy-runtime" and "edgekit" in artifact.versions
    assert artifact.notes == ["a toy file: nothing runs it"] and artifact.export_seconds is not None
    assert inspect(artifact.path).sha256 == artifact.sha256
    assert get_format("toy").inspect(artifact.path).inputs[0].shape == list(case.examples[0].shape)


def test_failure_hints_try_every_other_format(monkeypatch) -> None:
    from edgekit.export.failures import _candidates, describe

    assert _candidates("tflite", "int8", "full", calibrated=True) == [
        ("onnx", "int8", "static"), ("onnx", "int8", "dynamic"), ("executorch", "int8", "static"),
        ("executorch", "int8", "dynamic"), ("tflite", "int8", "dynamic")]
    assert _candidates("onnx", "int8", None, calibrated=False) == [
        ("tflite", "int8", "dynamic"), ("executorch", "int8", "dynamic"), ("onnx", "int8", "dynamic")]
    assert describe("tflite", "int8") == "tflite int8 full"
    monkeypatch.setitem(FORMATS, "toy", TOY)
    assert _candidates("onnx", "fp16", None, calibrated=False) == [("tflite", "fp16", None)]  # toy has no fp16
    assert ("toy", "fp32", None) in _candidates("onnx", "fp32", None, calibrated=False)
