"""``--input NAME:SHAPE[:DTYPE[:LOW..HIGH]]``: a model's inputs beyond one float tensor.

``--input input_ids:1,128:int64:0..30521 --input attention_mask:1,128:int64:1..1`` describes a
BERT-style encoder; ``--input-shape 1,3,224,224`` stays the shorthand for one float input named
``input``. Integer inputs are drawn uniformly in ``LOW..HIGH`` (both included) wherever edgekit
makes inputs up (export's example inputs, parity without data, the runner's benchmark inputs);
float inputs are standard normal unless a range is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgekit.errors import UsageError

DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
_FORMAT = "NAME:SHAPE[:DTYPE[:LOW..HIGH]], e.g. input_ids:1,128:int64:0..30521"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None

    @property
    def is_integer(self) -> bool:
        return self.dtype not in ("float32", "float16", "bool")

    def describe(self) -> str:
        dims = "×".join(str(d) for d in self.shape)
        rng = f" in {_num(self.low)}..{_num(self.high)}" if self.low is not None else ""
        return f"{self.name} {dims} {self.dtype}{rng}"

    def range(self) -> tuple[float, float] | None:
        return None if self.low is None else (self.low, self.high)  # type: ignore[return-value]

    def random(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """Seeded samples: ``n`` of them stacked on axis 0 (replacing the batch dimension), or one
        array of exactly ``shape``."""
        rng = np.random.default_rng(seed)
        shape = self.shape if n is None else (n, *self.shape[1:])
        if self.dtype == "bool":
            return rng.random(shape) > 0.5
        if self.is_integer:
            low, high = (int(self.low), int(self.high)) if self.low is not None else (0, 9)
            return rng.integers(low, high + 1, size=shape).astype(self.dtype)
        if self.low is not None:
            return rng.uniform(self.low, self.high, size=shape).astype(self.dtype)
        return rng.standard_normal(shape).astype(self.dtype)


def parse_input(text: str) -> InputSpec:
    """One ``--input`` value; a UsageError names the flag and the format."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not _NAME.match(parts[0]):
        raise UsageError(f"--input {text!r} is not {_FORMAT}", "name the input, then its shape")
    name, shape_text = parts[0], parts[1]
    try:
        shape = tuple(int(d) for d in shape_text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input {text!r}: shape {shape_text!r} is not a list of integers",
                         "write the shape as 1,128") from None
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input {text!r}: every dimension must be at least 1", "write the shape as 1,128")
    dtype = parts[2] if len(parts) > 2 and parts[2] else "float32"
    if dtype not in DTYPES:
        raise UsageError(f"--input {text!r}: unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    low = high = None
    if len(parts) == 4:
        low, high = _parse_range(parts[3], text)
        if dtype == "bool":
            raise UsageError(f"--input {text!r}: a bool input takes no range", "drop the range")
    return InputSpec(name, shape, dtype, low, high)


def parse_inputs(texts: Sequence[str]) -> list[InputSpec]:
    specs = [parse_input(t) for t in texts]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"--input names {', '.join(duplicates)} more than once", "give each input once")
    return specs


def example_tensors(specs: Sequence[InputSpec], seed: int = 0) -> tuple[Any, ...]:
    """Torch example inputs for export, one per spec, in order."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(s.random(seed=seed + i))) for i, s in enumerate(specs))


def random_feeds(specs: Sequence[InputSpec], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` seeded samples per input, by name (parity inputs when no data is given)."""
    return {s.name: s.random(n, seed=seed + i) for i, s in enumerate(specs)}


def runner_ranges(specs: Sequence[InputSpec]) -> dict[str, list[float]]:
    """The job's ``input_ranges``: where the runner draws its own benchmark inputs."""
    return {s.name: [s.low, s.high] for s in specs if s.low is not None}


def _parse_range(text: str, whole: str) -> tuple[float, float]:
    match = re.fullmatch(r"\s*(-?[\d.e+]+)\s*\.\.\s*(-?[\d.e+]+)\s*", text)
    if not match:
        raise UsageError(f"--input {whole!r}: range {text!r} is not LOW..HIGH", "e.g. 0..30521")
    try:
        low, high = float(match.group(1)), float(match.group(2))
    except ValueError:
        raise UsageError(f"--input {whole!r}: range {text!r} is not LOW..HIGH", "e.g. 0..30521") from None
    if low > high:
        raise UsageError(f"--input {whole!r}: LOW {_num(low)} is above HIGH {_num(high)}", "write LOW..HIGH")
    return low, high


def _num(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else f"{value:g}")
