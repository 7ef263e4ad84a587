"""Export a torch model to a device format. The table below is the only list of formats.

Format modules are imported lazily, so ``import edgekit`` never imports onnxruntime or
litert-torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgekit._callable import make_module_callable
from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.export.base import Format

FORMATS: dict[str, str] = {
    "onnx": "edgekit.export.onnx:FORMAT",
    "tflite": "edgekit.export.tflite:FORMAT",
}

SUFFIXES: dict[str, str] = {".onnx": "onnx", ".tflite": "tflite"}


def get_format(name: str) -> "Format":
    """The format object for ``name`` ("onnx", "tflite")."""
    try:
        module_name, attr = FORMATS[name].split(":")
    except KeyError:
        raise UsageError(
            f"unknown format {name!r}", f"choose one of: {', '.join(sorted(FORMATS))}"
        ) from None
    return getattr(importlib.import_module(module_name), attr)


def format_for_file(path: str) -> str | None:
    """The format name of a model file from its suffix, or None."""
    for suffix, name in SUFFIXES.items():
        if str(path).lower().endswith(suffix):
            return name
    return None


def export(*args, **kwargs):  # noqa: ANN002, ANN003 - edgekit.export.api.export, imported lazily
    """Export a torch model; see ``edgekit.export.api.export``."""
    from edgekit.export.api import export as _export

    return _export(*args, **kwargs)


make_module_callable(__name__, "export")


__all__ = ["FORMATS", "export", "format_for_file", "get_format"]
