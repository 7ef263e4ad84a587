"""`-v/--verbose`: detail notes (converter internals) only when asked, with the real converter."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.notes import is_detail


@pytest.mark.slow
def test_export_prints_flatbuffer_passes_only_with_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("litert_torch")
    from edgekit.export.api import export
    from edgekit.models import resolve_model

    resolved = resolve_model("example:fashion-cnn")
    artifact = export(resolved.module, resolved.example_inputs, format="tflite", precision="fp16",
                      out_dir=tmp_path / "api", check_parity=False)
    passes = [n for n in artifact.notes if n.startswith("flatbuffer passes: ")]
    assert passes and all(is_detail(n) for n in passes)  # the converter produced it, marked detail
    users = [n for n in artifact.notes if not is_detail(n)]
    assert "fp16 weights; inputs and outputs stay float32" in users

    def export_text(*flags: str) -> str:
        assert main(["-q", "export", "example:fashion-cnn", "--format", "tflite", "--precision", "fp16",
                     "-o", str(tmp_path / "cli"), *flags]) == 0
        return capsys.readouterr().out

    plain, verbose = export_text(), export_text("-v")
    assert "note     fp16 weights; inputs and outputs stay float32" in plain
    assert "flatbuffer passes" not in plain
    assert f"detail   {passes[0]}" in verbose and "note     fp16 weights" in verbose


@pytest.mark.slow
def test_compress_hides_detail_notes_unless_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - quantize: {formats: [onnx]}\n")

    def compress_text(out: str, *flags: str) -> str:
        assert main(["-q", "compress", "example:fashion-cnn", "--recipe", str(recipe), "--data",
                     "tests.compress.helpers:small_loaders", "-o", str(tmp_path / out), *flags]) == 0
        return capsys.readouterr().out

    plain = compress_text("plain")
    notes = json.loads((tmp_path / "plain" / "report.json").read_text())["steps"][0]["notes"]
    hidden = [n for n in notes if n.startswith("after.accuracy and after.artifact_bytes are")]
    assert hidden and hidden[0] not in plain  # in the report, not on the terminal
    assert f"  detail   {hidden[0]}" in compress_text("verbose", "--verbose")
