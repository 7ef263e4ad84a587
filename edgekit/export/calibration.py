"""Inputs of an export as named numpy arrays: example inputs, calibration and parity samples.

Every exporter sees data the same way: ``{input name: array stacked along the batch axis}``.
Callers may pass one array (a single-input model), a dict keyed by input name, or a list/tuple
with one array per input in ``forward`` order; torch tensors are accepted wherever arrays are.
An exported model takes a fixed batch (that of the example inputs, unless exported with a dynamic
batch), so samples are fed in chunks of that batch size.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgekit.errors import UsageError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """Example inputs as a tuple of torch tensors (a lone tensor or array becomes a 1-tuple)."""
    import torch

    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        raise UsageError(
            "example_inputs must be positional", "pass a tensor or a tuple of tensors in forward() order"
        )
    out = []
    for i, value in enumerate(example_inputs):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise UsageError(
                f"example input {i} is a {type(value).__name__}, not a tensor",
                "pass tensors only (constants belong in the module)",
            )
        out.append(value.detach())
    if not out:
        raise UsageError("no example inputs given", "pass one example tensor per forward() argument")
    return tuple(out)


def input_names(model: Any, count: int) -> list[str]:
    """Names for the model's inputs: its ``forward`` parameter names, else ``input``/``input_N``."""
    try:
        params = [
            p.name
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError, AttributeError):
        params = []
    if len(params) >= count and len(set(params[:count])) == count:
        return params[:count]
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def flatten_outputs(out: Any) -> list[Any]:
    """A model's outputs as a flat list (a tensor, a tuple/list of tensors, or a dict of them)."""
    if isinstance(out, Mapping):
        return [v for value in out.values() for v in flatten_outputs(value)]
    if isinstance(out, (tuple, list)):
        return [v for value in out for v in flatten_outputs(value)]
    return [out]


def _to_numpy(value: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return np.asarray(value)


def to_feeds(data: Any, names: Sequence[str], what: str = "inputs") -> dict[str, np.ndarray]:
    """``data`` (array | dict | list/tuple of arrays) as ``{name: array}`` for ``names``."""
    if isinstance(data, Mapping):
        missing = [n for n in names if n not in data]
        if missing:
            # positional fallback: a dict with the right number of entries in input order
            if len(data) == len(names):
                return {n: _to_numpy(v) for n, v in zip(names, data.values())}
            raise UsageError(
                f"{what} lack arrays for inputs {missing}", f"the model's inputs are: {', '.join(names)}"
            )
        return {n: _to_numpy(data[n]) for n in names}
    if isinstance(data, (list, tuple)):
        if len(data) != len(names):
            raise UsageError(
                f"{what} have {len(data)} arrays but the model has {len(names)} inputs",
                f"pass one array per input: {', '.join(names)}",
            )
        return {n: _to_numpy(v) for n, v in zip(names, data)}
    if len(names) != 1:
        raise UsageError(
            f"{what} are one array but the model has {len(names)} inputs",
            f"pass a dict keyed by input name: {', '.join(names)}",
        )
    return {names[0]: _to_numpy(data)}


def sample_count(feeds: Mapping[str, np.ndarray]) -> int:
    counts = {len(v) if np.ndim(v) else 1 for v in feeds.values()}
    if len(counts) != 1:
        raise UsageError(
            "inputs have different numbers of samples",
            "stack the same number of samples for every input along axis 0",
        )
    return counts.pop()


def check_shapes(feeds: Mapping[str, np.ndarray], examples: Sequence[Any], names: Sequence[str], what: str) -> None:
    """Each array must be a stack of samples shaped like its example input (batch axis aside)."""
    for name, example in zip(names, examples):
        want = tuple(example.shape[1:])
        got = tuple(np.shape(feeds[name])[1:])
        if got != want:
            raise UsageError(
                f"{what} for input {name!r} have sample shape {list(got)} but the model takes {list(want)}",
                "stack samples along axis 0, each shaped like one example input without its batch axis",
            )


def batches(feeds: Mapping[str, np.ndarray], batch: int, pad: bool = True) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """``(chunk, n_real)`` of ``batch`` samples each; the last chunk is padded by repeating its
    last sample (``pad``) or dropped when incomplete (``pad=False``)."""
    n = sample_count(feeds)
    for start in range(0, n, batch):
        real = min(batch, n - start)
        if real < batch and not pad:
            return
        chunk = {}
        for name, arr in feeds.items():
            part = np.asarray(arr[start : start + real])
            if real < batch:
                fill = np.repeat(part[-1:], batch - real, axis=0)
                part = np.concatenate([part, fill], axis=0)
            chunk[name] = np.ascontiguousarray(part)
        yield chunk, real


def summary(feeds: Mapping[str, np.ndarray], method: str, **extra: Any) -> dict[str, Any]:
    """What the manifest records about a calibration set."""
    digest = hashlib.sha256()
    for name in sorted(feeds):
        arr = np.ascontiguousarray(feeds[name])
        digest.update(name.encode())
        digest.update(arr.tobytes())
    data = {
        "method": method,
        "n_samples": sample_count(feeds),
        "inputs": {name: {"shape": list(np.shape(arr)), "dtype": str(np.asarray(arr).dtype)} for name, arr in feeds.items()},
        "sha256": digest.hexdigest(),
    }
    data.update(extra)
    return data


def check_method(method: str) -> str:
    method = str(method).lower()
    if method not in CALIBRATION_METHODS:
        raise UsageError(
            f"unknown calibration method {method!r}", f"choose one of: {', '.join(CALIBRATION_METHODS)}"
        )
    return method


__all__ = [
    "CALIBRATION_METHODS",
    "as_tuple",
    "batches",
    "check_method",
    "check_shapes",
    "flatten_outputs",
    "input_names",
    "output_names",
    "sample_count",
    "summary",
    "to_feeds",
]
