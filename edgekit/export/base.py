"""The Format interface and the Artifact it produces.

A format (ONNX, TFLite, ...) is one module in ``edgekit/export/`` defining ``FORMAT``, an object
with the attributes and methods of ``Format`` below. ``edgekit/export/__init__.py`` holds the only
table of formats; adding one is one module, one table line, one test file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_SCHEMA_VERSION = 1


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]  # str for a dynamic dimension ("batch")
    dtype: str  # numpy dtype name: "float32", "int8", ...
    quantization: dict[str, Any] | None = None  # {"scale": f, "zero_point": i} for int8/uint8 I/O


@dataclass
class Artifact:
    """An exported model file plus everything a device and a report need to know about it."""

    path: Path
    format: str
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    size_bytes: int = 0
    sha256: str = ""
    source_sha256: str | None = None
    opset: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    export_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    # how raw data becomes the model's inputs (edgekit.data.Preprocess.to_manifest()): the same
    # numbers for the device and the user's own app; None when unknown
    preprocess: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.exists() and not self.sha256:
            self.size_bytes = self.path.stat().st_size
            self.sha256 = sha256_file(self.path)

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = self.path.name
        data["schema_version"] = MANIFEST_SCHEMA_VERSION
        return data

    def io_quantization(self) -> dict[str, Any]:
        """The runner's ``io_quantization`` job field (see docs/runner-protocol.md)."""
        return {
            "inputs": {t.name: t.quantization for t in self.inputs if t.quantization},
            "outputs": {t.name: t.quantization for t in self.outputs if t.quantization},
        }

    def write_manifest(self) -> Path:
        write_json_atomic(self.manifest_path, self.to_dict())
        return self.manifest_path

    @classmethod
    def from_manifest(cls, manifest: Path) -> "Artifact":
        data = json.loads(Path(manifest).read_text())
        data.pop("schema_version", None)
        data["path"] = Path(manifest).with_name(data["path"])
        data["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
        data["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
        return cls(**data)


class Format(Protocol):
    """What every format module's ``FORMAT`` object provides."""

    name: str  # "onnx"
    suffix: str  # ".onnx"
    precisions: tuple[str, ...]  # ("fp32", "fp16", "int8")
    extra: str | None  # the pip extra that provides it ("tflite"), None when always installed
    runtimes: tuple[str, ...]  # runner backends that load it, in order of preference

    def available(self) -> bool:
        """True when this install can export this format (an import probe; never installs)."""

    def export(
        self,
        model: Any,
        example_inputs: Sequence[Any],
        precision: str,
        out_path: Path,
        calibration: np.ndarray | dict[str, np.ndarray] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Artifact:
        """Write ``out_path`` and return its Artifact (the manifest is written by the caller)."""

    def inspect(self, path: Path) -> Artifact:
        """An Artifact for an existing model file deployed as is."""

    def int8_weight_grid(self, precision: str, options: dict[str, Any] | None) -> str | None:
        """"per_channel" / "per_tensor" when this export quantizes weights to symmetric int8 from
        calibration data (the api then rounds them with GPTQ first), else None."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside ``path`` and rename it, so no half-written file remains."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
