"""The Format interface, the Artifact it produces, and ``BaseFormat``, what every format shares.

A format (ONNX, TFLite, ...) is one module in ``edgekit/export/`` defining ``FORMAT``, an
instance of a ``BaseFormat`` subclass that declares the format and supplies its conversion and
its file reader. ``edgekit/export/__init__.py`` holds the only table of formats; the CLI's
choices, the device profiles' known formats, provision's runtime map and "which formats convert
this op" all come from it. Adding a format is its module, its table
line and its backend in the device runner (``runtimes/edgekit_runner.py``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import MissingDependencyError, UnsupportedPrecisionError, UsageError
from edgekit.outputs import write_json_atomic

MANIFEST_SUFFIX = ".manifest.json"
# torch convolution module types (int8 modes that quantize linear layers only leave these float)
CONV_MODULE_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
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


@dataclass(frozen=True)
class DeviceRuntime:
    """A runtime the device runner can load a format with."""

    name: str  # the runner's name for it, what the device imports: "ai_edge_litert"
    project: str  # the PyPI project that provides it: "ai-edge-litert"
    default: bool = True  # installed by ``edgekit provision`` when no runtime is named
    # when set: the project's wheel goes on the device without its own requirements (they name
    # host-side tools, some with no device wheels) and these projects go with it instead;
    # "NAME==host": the version this host has (a binary built against it)
    device_requires: tuple[str, ...] | None = None


@dataclass
class Written:
    """What a format's conversion knows about the file it wrote (``BaseFormat.write``)."""

    converter: str  # "torch.onnx (dynamo)", for the manifest's versions
    calibration: dict[str, Any] | None = None  # the calibration summary (int8)
    notes: list[str] = field(default_factory=list)
    opset: int | None = None
    # notes that need the written file's I/O (input names), computed from its Artifact
    more_notes: Callable[[Artifact], list[str]] | None = None


class BaseFormat:
    """What every format module's ``FORMAT`` object is: the declaration below, and the shared half
    of an export (precision and dependency checks, the file's edgekit metadata, every Artifact
    field). A format subclasses it and supplies ``available``, ``versions``, ``write`` (the
    conversion), ``inspect``, ``int8_weight_grid`` and ``converts_op``."""

    name: str  # "onnx"
    suffix: str  # ".onnx"
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    int8_modes: tuple[str, ...] = ()  # ("static", "dynamic"): the first is the default
    float_modules_mode: str | None = None  # the int8 mode that can keep named modules float, if any
    # int8 mode → module types whose weights that mode leaves float (for the size estimate in
    # edgekit.export.int8_modes: a mode that cannot fit the size limit is not exported first)
    int8_float_module_types: dict[str, tuple[str, ...]] = {}
    extra: str | None = None  # the pip extra that provides it ("tflite"), None when always installed
    device_runtimes: tuple[DeviceRuntime, ...] = ()  # runner backends that load it, in order of preference

    @property
    def runtimes(self) -> tuple[str, ...]:
        """The device runtimes' names, as the runner and the device profiles call them."""
        return tuple(r.name for r in self.device_runtimes)

    def available(self) -> bool:  # pragma: no cover - every format overrides it
        """True when this install can export this format (an import probe; never installs)."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """The converter's and runtime's package versions, for the manifest."""
        return {}

    def inspect(self, path: Path) -> Artifact:  # pragma: no cover - every format overrides it
        """An Artifact for an existing model file deployed as is."""
        raise NotImplementedError

    def int8_weight_grid(self, precision: str, options: dict[str, Any] | None) -> str | None:  # pragma: no cover
        """"per_channel" / "per_tensor" when this export quantizes weights to symmetric int8 from
        calibration data (the api then rounds them with GPTQ first), else None."""
        raise NotImplementedError

    def converts_op(self, overloads: Sequence[Any], model: Any = None,
                    examples: Sequence[Any] | None = None) -> bool:  # pragma: no cover - every format overrides it
        """True when this format's converter handles one of the torch op ``overloads`` (a
        registry look-up, or a trial export of ``model`` where the converter has no registry)."""
        raise NotImplementedError

    def require(self, precision: str) -> None:
        """The one check that this format exports ``precision`` here (nothing is flipped silently)."""
        if precision not in self.precisions:
            raise UnsupportedPrecisionError(
                f"{self.name} does not support precision {precision!r}", f"choose one of: {', '.join(self.precisions)}"
            )
        if not self.available():
            extra = self.extra or self.name
            raise MissingDependencyError(
                f"exporting {self.name} needs the [{extra}] extra", f"pip install 'edgekit[{extra}]'", extra=self.extra
            )

    def needs_calibration(self, precision: str, options: dict[str, Any] | None = None) -> bool:
        """True when this export quantizes from calibration data (static / full-integer int8)."""
        return self.int8_weight_grid(precision, options) is not None

    def metadata(self, precision: str, opts: dict[str, Any]) -> dict[str, str]:
        """The ``edgekit.*`` entries a format stores in its file (read back by ``inspect``)."""
        meta = {"version": edgekit_version(), "precision": precision, "format": self.name}
        meta.update({k: str(v) for k, v in (opts.get("metadata") or {}).items()})
        if precision == "int8":
            meta["int8_mode"] = str(opts.get("int8_mode"))
        return meta

    def inspected(self, path: Path, meta: dict[str, str], precision: str, inputs: list[TensorSpec],
                  outputs: list[TensorSpec], **fields: Any) -> Artifact:
        """The Artifact ``inspect`` returns: the file's I/O and what its ``edgekit.*`` metadata
        (``meta``, prefix removed) says: source hash, and the edgekit version that wrote it."""
        artifact = Artifact(path=path, format=self.name, precision=precision, inputs=inputs, outputs=outputs,
                            source_sha256=meta.get("source_sha256"), **fields)
        if meta.get("version"):
            artifact.versions["edgekit_exported_with"] = meta["version"]
        return artifact

    def export(
        self,
        model: Any,
        example_inputs: Sequence[Any],
        precision: str,
        out_path: Path,
        calibration: Any = None,
        options: dict[str, Any] | None = None,
    ) -> Artifact:
        """Write ``out_path`` (``write``) and return its Artifact, every field set here."""
        from edgekit.export import calibration as cal

        self.require(precision)
        started = time.perf_counter()
        out_path = Path(out_path)
        written = self.write(model, cal.as_tuple(example_inputs), precision, out_path, calibration, options)
        artifact = self.inspect(out_path)
        artifact.format = self.name
        artifact.precision = precision
        artifact.opset = written.opset if written.opset is not None else artifact.opset
        artifact.versions.pop("edgekit_exported_with", None)
        artifact.versions = {**base_versions(), **artifact.versions, **self.versions(), "converter": written.converter,
                             "runtime": self.device_runtimes[0].project}
        artifact.calibration = written.calibration
        more = written.more_notes(artifact) if written.more_notes else []
        artifact.notes = written.notes + more + artifact.notes
        artifact.export_seconds = time.perf_counter() - started
        return artifact

    def write(self, model: Any, examples: tuple[Any, ...], precision: str, out_path: Path, calibration: Any,
              options: dict[str, Any] | None) -> Written:  # pragma: no cover - every format overrides it
        """Convert ``model`` into ``out_path`` (metadata included); the precision is checked already."""
        raise NotImplementedError


def edgekit_version() -> str:
    try:
        from importlib.metadata import version

        return version("edgekit")
    except Exception:
        import edgekit

        return edgekit.__version__


def base_versions() -> dict[str, str]:
    """edgekit, torch and numpy versions (formats add their converter and runtime)."""
    import torch

    return {"edgekit": edgekit_version(), "torch": torch.__version__, "numpy": np.__version__}


def options_with_defaults(options: dict[str, Any] | None, defaults: dict[str, Any], what: str,
                          hidden: Sequence[str] = ("metadata",)) -> dict[str, Any]:
    """``options`` over a format's ``defaults``; a name not in ``defaults`` is a UsageError that
    lists the known ones (``what`` names the format: "ONNX"; ``hidden`` names stay out of that list)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UsageError(
            f"unknown {what} export option(s): {', '.join(unknown)}",
            f"known options: {', '.join(sorted(k for k in defaults if k not in hidden))}",
        )
    return {**defaults, **options}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Format = BaseFormat  # the name the registry and its callers use for a format object
