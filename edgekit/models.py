"""Resolve a MODEL argument: ``example:NAME``, a factory ``pkg.module:fn``, or an .onnx/.tflite file."""

from __future__ import annotations

import hashlib
import importlib
import pickle  # only for the exception type torch.load raises
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from edgekit.errors import ModelError, UsageError
from edgekit.examples import get_example
from edgekit.export import format_for_file

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class ResolvedModel:
    """A torch module with example inputs, or a model file deployed as is."""

    name: str
    module: torch.nn.Module | None = None
    example_inputs: tuple[torch.Tensor, ...] | None = None
    file: Path | None = None
    file_format: str | None = None
    dataset: str | None = None  # an eval set the model is known to work on

    @property
    def is_file(self) -> bool:
        return self.file is not None


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """"1,1,28,28" -> (1, 1, 28, 28)."""
    if not isinstance(text, str):
        return tuple(int(d) for d in text)
    try:
        separator = "," if "," in text else "x"
        shape = tuple(int(part) for part in text.split(separator))
    except ValueError:
        raise UsageError(f"bad --input-shape {text!r}", "give comma-separated sizes, e.g. 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"bad --input-shape {text!r}", "every size must be a positive integer, e.g. 1,3,224,224")
    return shape


def resolve_model(
    ref: str,
    *,
    weights: str | Path | None = None,
    input_shape: str | Sequence[int] | None = None,
) -> ResolvedModel:
    """Turn a MODEL reference into a torch module (checked by one forward pass) or a model file."""
    if ref.startswith("example:"):
        return _resolve_example(ref.split(":", 1)[1], input_shape)
    if format_for_file(ref):
        return _resolve_file(Path(ref))
    if _FACTORY.match(ref):
        return _resolve_factory(ref, weights, input_shape)
    if Path(ref).exists():
        raise ModelError(f"{ref} is not a model file edgekit can deploy", "use a .onnx or .tflite file")
    raise ModelError(
        f"cannot resolve model {ref!r}",
        "use example:fashion-cnn, a factory pkg.module:fn, or a .onnx/.tflite file",
    )


def _resolve_example(name: str, input_shape: str | Sequence[int] | None) -> ResolvedModel:
    example = get_example(name)
    shape = parse_input_shape(input_shape) if input_shape else example.input_shape
    module = example.build().eval()
    inputs = (torch.zeros(shape),)
    _check_forward(module, inputs, f"example:{name}")
    return ResolvedModel(name=name, module=module, example_inputs=inputs, dataset=example.dataset)


def _resolve_file(path: Path) -> ResolvedModel:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", "check the path")
    return ResolvedModel(name=path.stem, file=path, file_format=format_for_file(str(path)))


def _resolve_factory(ref: str, weights: str | Path | None, input_shape: Any) -> ResolvedModel:
    module_name, fn_name = ref.split(":")
    if input_shape is None:
        raise UsageError(f"{ref} needs --input-shape", "e.g. --input-shape 1,3,224,224")
    try:
        factory = getattr(importlib.import_module(module_name), fn_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name}: {exc}", "check PYTHONPATH and the module name") from None
    except AttributeError:
        raise ModelError(f"{module_name} has no attribute {fn_name!r}", "name a function that returns a torch.nn.Module") from None
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{ref} returned {type(module).__name__}, not a torch.nn.Module", "return the model from the factory")
    if weights is not None:
        _load_weights(module, Path(weights))
    inputs = (torch.zeros(parse_input_shape(input_shape)),)
    _check_forward(module.eval(), inputs, ref)
    return ResolvedModel(name=fn_name, module=module, example_inputs=inputs)


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}", "pass a state_dict saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelError(f"cannot load weights {path}: {first_line}", "the file must be a state_dict of this model") from None


def _check_forward(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], ref: str) -> None:
    shape = ",".join(str(d) for d in inputs[0].shape)
    try:
        with torch.no_grad():
            module(*inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0][:200]
        raise ModelError(
            f"{ref} does not accept an input of shape {shape}: {first_line}",
            "pass the shape the model expects with --input-shape",
        ) from None


def state_dict_sha256(module: torch.nn.Module) -> str:
    """A hash of the weights, to tie an artifact to the model it came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
