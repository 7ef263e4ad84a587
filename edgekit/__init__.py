"""edgekit: compress, export and deploy PyTorch models to edge devices, and measure them there.

The host's flow is ``compress → export → deploy → report``. Heavy modules load on first use, so
``import edgekit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "deploy": "edgekit.deploy",  # callable module: edgekit.deploy(model, device, options)
    "DeployOptions": "edgekit.deploy:DeployOptions",
    "export": "edgekit.export",  # callable package: edgekit.export(model, example_inputs, ...)
    "devices": "edgekit.devices",
    "errors": "edgekit.errors",
    "compress": "edgekit.compress",
    "report": "edgekit.report",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


__all__ = ["DeployOptions", "__version__", "compress", "deploy", "devices", "errors", "export", "report"]
