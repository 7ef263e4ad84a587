"""Export a torch model to a device format. The table below is the only list of formats.

Everything else that depends on the formats asks this registry: the CLI's ``--format`` and
``--int8-mode`` choices, the device profiles' known formats, provision's runtime map, the model
file suffixes and "which formats convert this op". Format modules are imported lazily, so
``import edgekit`` never imports onnxruntime or litert-torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Iterator

from edgekit._callable import make_module_callable
from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.export.base import DeviceRuntime, Format

FORMATS: dict[str, str] = {
    "onnx": "edgekit.export.onnx:FORMAT",
    "tflite": "edgekit.export.tflite:FORMAT",
    "executorch": "edgekit.export.executorch:FORMAT",
}


def get_format(name: str) -> "Format":
    """The format object for ``name`` ("onnx", "tflite")."""
    try:
        module_name, attr = FORMATS[name].split(":")
    except KeyError:
        raise UsageError(
            f"unknown format {name!r}", f"choose one of: {', '.join(sorted(FORMATS))}"
        ) from None
    return getattr(importlib.import_module(module_name), attr)


def formats() -> Iterator["Format"]:
    """Every registered format object, in the table's order."""
    return (get_format(name) for name in FORMATS)


def suffixes() -> dict[str, str]:
    """Model file suffix → format name (".onnx" → "onnx")."""
    return {fmt.suffix: fmt.name for fmt in formats()}


def format_for_file(path: str) -> str | None:
    """The format name of a model file from its suffix, or None."""
    for suffix, name in suffixes().items():
        if str(path).lower().endswith(suffix):
            return name
    return None


def int8_mode_names() -> list[str]:
    """Every format's int8 modes, each once, in the table's order ("static", "dynamic", "full")."""
    return list(dict.fromkeys(mode for fmt in formats() for mode in fmt.int8_modes))


def device_runtimes() -> list["DeviceRuntime"]:
    """The runner backends of every format (each once), in order of preference."""
    seen: dict[str, "DeviceRuntime"] = {}
    for fmt in formats():
        for runtime in fmt.device_runtimes:
            seen.setdefault(runtime.name, runtime)
    return list(seen.values())


def export(*args, **kwargs):  # noqa: ANN002, ANN003 - edgekit.export.api.export, imported lazily
    """Export a torch model; see ``edgekit.export.api.export``."""
    from edgekit.export.api import export as _export

    return _export(*args, **kwargs)


make_module_callable(__name__, "export")


__all__ = ["FORMATS", "device_runtimes", "export", "format_for_file", "formats", "get_format", "int8_mode_names",
           "suffixes"]
