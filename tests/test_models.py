"""Resolving MODEL arguments: examples, factories with weights, model files; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit.errors import ModelError, UsageError
from edgekit.models import parse_input_shape, resolve_model

FACTORY_MODULE = """
import torch
def small():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
def not_a_model():
    return 42
"""


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "userpkg_models.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userpkg_models"


def test_example_resolves_with_its_dataset() -> None:
    resolved = resolve_model("example:fashion-cnn")
    assert resolved.module is not None and not resolved.is_file
    assert tuple(resolved.example_inputs[0].shape) == (1, 1, 28, 28)
    assert resolved.dataset == "example:fashion-mnist"


def test_factory_with_weights(factory: str, tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    torch.nn.init.constant_(model[1].weight, 0.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    resolved = resolve_model(f"{factory}:small", weights=tmp_path / "w.pt", input_shape="1,3,4")
    assert torch.all(resolved.module[1].weight == 0.5)


def test_factory_errors(factory: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs --input-shape"):
        resolve_model(f"{factory}:small")
    with pytest.raises(ModelError, match="does not accept an input of shape 1,5"):
        resolve_model(f"{factory}:small", input_shape="1,5")
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        resolve_model(f"{factory}:not_a_model", input_shape="1,12")
    with pytest.raises(ModelError, match="has no attribute 'nope'"):
        resolve_model(f"{factory}:nope", input_shape="1,12")
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    with pytest.raises(ModelError, match="cannot load weights"):
        resolve_model(f"{factory}:small", weights=tmp_path / "junk.pt", input_shape="1,12")


def test_model_files_and_bad_references(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(str(tmp_path / "missing.onnx"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert resolve_model(str(tmp_path / "m.onnx")).file_format == "onnx"
    with pytest.raises(ModelError, match="unknown example"):
        resolve_model("example:resnet")
    with pytest.raises(ModelError, match="cannot resolve model"):
        resolve_model("no such thing")


@pytest.mark.parametrize("bad", ["", "1,x", "0,3", "-1"])
def test_bad_input_shapes(bad: str) -> None:
    with pytest.raises(UsageError, match="bad --input-shape"):
        parse_input_shape(bad)


def test_input_shape_parsing() -> None:
    assert parse_input_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_input_shape("1x3x8x8") == (1, 3, 8, 8)
