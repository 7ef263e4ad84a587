"""Resolve a MODEL argument: ``example:NAME``, a factory ``pkg.module:fn``, or an .onnx/.tflite file."""

from __future__ import annotations

import hashlib
import math
import os
import pickle  # only for the exception type torch.load raises
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from edgekit.errors import ModelError, UsageError
from edgekit.examples import get_example
from edgekit.export import format_for_file, suffixes
from edgekit.refs import import_ref, is_ref

@dataclass
class ResolvedModel:
    """A torch module with example inputs, or a model file deployed as is."""

    name: str
    module: torch.nn.Module | None = None
    example_inputs: tuple[torch.Tensor, ...] | None = None
    file: Path | None = None
    file_format: str | None = None
    dataset: str | None = None  # an eval set the model is known to work on
    preprocess: Any = None  # edgekit.data.Preprocess the model was trained with (the example's), if known
    input_specs: Any = None  # the --input specs (edgekit.inputspec.InputSpec) it was described with

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
    inputs: Sequence[Any] | None = None,
) -> ResolvedModel:
    """Turn a MODEL reference into a torch module (checked by one forward pass) or a model file.

    ``inputs``: :class:`edgekit.inputspec.InputSpec` per forward() argument, in order, for a
    factory whose inputs are not one float tensor (``--input``)."""
    if inputs:
        if not is_ref(ref):
            raise UsageError("--input describes a pkg.module:fn model's inputs",
                             "drop --input (examples and model files know their inputs)")
        return _resolve_factory(ref, weights, None, inputs)
    if ref.startswith("example:"):
        return _resolve_example(ref.split(":", 1)[1], input_shape)
    if format_for_file(ref):
        return _resolve_file(Path(ref))
    if is_ref(ref):
        return _resolve_factory(ref, weights, input_shape)
    if Path(ref).exists():
        raise ModelError(f"{ref} is not a model file edgekit can deploy", f"use a {' or '.join(suffixes())} file")
    raise ModelError(
        f"cannot resolve model {ref!r}",
        f"use example:fashion-cnn, a factory pkg.module:fn, or a {'/'.join(suffixes())} file",
    )


def _resolve_example(name: str, input_shape: str | Sequence[int] | None) -> ResolvedModel:
    example = get_example(name)
    shape = parse_input_shape(input_shape) if input_shape else example.input_shape
    module = example.build().eval()
    inputs = (example_zeros(tuple(shape)),)
    _check_forward(module, inputs, f"example:{name}")
    return ResolvedModel(name=name, module=module, example_inputs=inputs, dataset=example.dataset,
                         preprocess=example.preprocess)


def _resolve_file(path: Path) -> ResolvedModel:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", "check the path")
    return ResolvedModel(name=path.stem, file=path, file_format=format_for_file(str(path)))


def _resolve_factory(ref: str, weights: str | Path | None, input_shape: Any, specs: Sequence[Any] | None = None) -> ResolvedModel:
    fn_name = ref.split(":")[1]
    if input_shape is None and not specs:
        raise UsageError(f"{ref} needs --input-shape or --input",
                         "e.g. --input-shape 1,3,224,224, or --input input_ids:1,128:int64:0..30521")
    factory = import_ref(ref, ModelError, attr_hint="name a function that returns a torch.nn.Module")
    shape = parse_input_shape(input_shape) if not specs else None  # a bad shape is refused before the factory runs
    if specs:
        for spec in specs:
            example_zeros(spec.shape)  # the same size check as --input-shape
    module = _call_factory(factory, ref)
    if weights is not None:
        _load_weights(module, Path(weights))
    if specs:
        from edgekit.inputspec import example_tensors

        _check_input_names(module, specs, ref)
        inputs = example_tensors(specs)
    else:
        inputs = (example_zeros(shape),)
    _check_forward(module.eval(), inputs, ref)
    return ResolvedModel(name=fn_name, module=module, example_inputs=inputs, input_specs=list(specs) if specs else None)


def _check_input_names(module: torch.nn.Module, specs: Sequence[Any], ref: str) -> None:
    """Several --input: forward()'s arguments, in order (the artifact's inputs take forward()'s names)."""
    if len(specs) < 2:
        return
    from edgekit.export.calibration import input_names

    names = input_names(module, len(specs))
    given = [s.name for s in specs]
    if names != given and not all(n.startswith("input") for n in names):
        raise UsageError(f"--input names {', '.join(given)} are not {ref}'s forward() arguments {', '.join(names)}",
                         f"give one --input per forward() argument, in order: {', '.join(names)}")


def _call_factory(factory: Any, ref: str) -> torch.nn.Module:
    """``factory()``, which must be a function of no arguments returning a torch.nn.Module."""
    if not callable(factory) or isinstance(factory, torch.nn.Module):
        raise ModelError(f"{ref} is a {type(factory).__name__}, not a function",
                         "name a function that takes no arguments and returns a torch.nn.Module")
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is a bad MODEL, said in one line
        raise ModelError(f"calling {ref}() failed: {_first_line(exc)}",
                         "the factory must take no arguments and return a torch.nn.Module") from exc
    if isinstance(module, type) and issubclass(module, torch.nn.Module):
        raise ModelError(f"{ref} returned the class {module.__name__}, not an instance", f"return {module.__name__}()")
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{ref} returned {type(module).__name__}, not a torch.nn.Module", "return the model from the factory")
    return module


def example_zeros(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 example input of ``shape``; a shape too large for this host is a UsageError (not an
    allocation failure)."""
    need = 4 * math.prod(shape)
    limit = _host_memory_bytes() // 4
    text = ",".join(str(d) for d in shape)
    if need > limit:
        raise UsageError(f"--input-shape {text} would need {need / 2**30:,.1f} GiB per input (float32)",
                         f"this host has {limit * 4 / 2**30:.0f} GiB; give the shape of one example, e.g. 1,3,224,224")
    try:
        return torch.zeros(shape)
    except RuntimeError as exc:  # the allocator's refusal, in case memory is shorter than it looks
        raise UsageError(f"--input-shape {text} would need {need / 2**30:,.1f} GiB per input (float32), more than "
                         "this host can allocate", "give the shape of one example, e.g. 1,3,224,224") from exc


def _host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit beyond the allocator's
        return 1 << 62


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}", "pass a state_dict saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except pickle.UnpicklingError:
        # torch's message is a paragraph about weights_only; what matters is that this is no state_dict
        raise ModelError(f"cannot load weights {path}: not a state_dict saved with torch.save (or it holds "
                         "pickled objects beyond tensors)", "save model.state_dict() with torch.save") from None
    except (RuntimeError, ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"cannot load weights {path}: {first_line}", "the file must be a state_dict of this model") from None


def _check_forward(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], ref: str) -> None:
    shape = ",".join(str(d) for d in inputs[0].shape)
    try:
        # the model's own warnings (e.g. torch's about its kernels) are not ours to print here
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module(*inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            f"{ref} does not accept an input of shape {shape}: {first_line}",
            "pass the shape the model expects with --input-shape",
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's forward(): any failure is a bad MODEL
        raise ModelError(f"{ref}'s forward() raised {_first_line(exc)} on an input of shape {shape}",
                         "fix the model's forward(), or pass the shape it expects with --input-shape") from exc


def state_dict_sha256(module: torch.nn.Module) -> str:
    """A hash of the weights, to tie an artifact to the model it came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
