"""``edgekit compress``: writes its outputs, rebuilds, and leaves nothing half-written on failure."""

from __future__ import annotations

import json

import pytest
import torch

from edgekit.cli import main
from edgekit.compress import load_compressed
from edgekit.compress.measure import evaluate
from edgekit.errors import ExitCode

DATA = "tests.compress.helpers:small_loaders"


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_compress_writes_model_manifest_report_and_int8(tmp_path, data):
    recipe = _recipe(tmp_path, "steps:\n"
                               "  - prune: {structure: channels, ratio: 0.5}\n"
                               "  - finetune: {epochs: 1, max_batches: 4}\n"
                               "  - quantize: {formats: [onnx]}\n")
    out = tmp_path / "out"
    code = main(["--quiet", "compress", "example:fashion-cnn", "--recipe", recipe, "--data", DATA, "-o", str(out)])
    assert code == ExitCode.OK
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.int8.onnx", "model.int8.onnx.manifest.json",
                                                   "model.pt", "report.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base"]["ref"] == "example:fashion-cnn"
    assert [c["type"] for c in manifest["changes"]] == ["channel_pruning"]
    assert manifest["quantization"]["formats"] == ["onnx"]
    state = torch.load(out / "model.pt", weights_only=True)  # tensors only, no pickled module
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    from edgekit.report.load import load_report

    report = load_report(out / "report.json")
    assert report.kind == "compress" and [s.name for s in report.steps] == ["prune", "finetune", "quantize"]
    assert report.artifact.file == "model.int8.onnx" and report.artifact.precision == "int8"
    assert report.steps[0].after.params < 0.35 * report.steps[0].before.params
    rebuilt = load_compressed(out)
    assert evaluate(rebuilt, data.val) == pytest.approx(report.steps[1].after.accuracy)
    assert not list(tmp_path.glob(".out.partial-*"))


def test_json_output_and_existing_folder(tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    recipe = _recipe(tmp_path, "- low_rank: {rank_ratio: 0.25, layers: [classifier.1]}\n")
    code = main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", DATA, "-o", str(out), "--json"])
    assert code == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "compress" and report["steps"][0]["extra"]["changes"]["type"] == "low_rank"
    assert (out / "keep.txt").read_text() == "mine" and (out / "model.pt").is_file()
    assert isinstance(load_compressed(out).classifier[1], torch.nn.Sequential)


def test_bad_recipe_exits_2_and_writes_nothing(tmp_path, capsys):
    recipe = _recipe(tmp_path, "steps:\n  - finetune: {epochs: 1}\n  - prune: {ratio: 1.2}\n")
    out = tmp_path / "out"
    code = main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", DATA, "-o", str(out)])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "recipe step 2 (prune): ratio" in err and err.startswith("error:")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_failure_mid_recipe_leaves_nothing_half_written(tmp_path, capsys):
    recipe = _recipe(tmp_path, "steps:\n"
                               "  - prune: {ratio: 0.5}\n"
                               "  - low_rank: {ranks: {classifier.1: 999}}\n")
    out = tmp_path / "out"
    code = main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", DATA, "-o", str(out)])
    assert code == ExitCode.USAGE
    assert "recipe step 2 (low_rank)" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_bad_model_and_data(tmp_path, capsys):
    recipe = _recipe(tmp_path, "- finetune: {epochs: 0}\n")
    out = tmp_path / "out"
    assert main(["compress", "example:nope", "--recipe", recipe, "--data", DATA, "-o", str(out)]) == ExitCode.USAGE
    assert "unknown example" in capsys.readouterr().err
    assert main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", "mnist", "-o", str(out)]) == ExitCode.USAGE
    assert "unknown training data" in capsys.readouterr().err
    assert not out.exists()
