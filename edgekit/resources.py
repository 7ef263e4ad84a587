"""Where the runner and the built-in device profiles are, in a checkout and in an installed wheel.

The wheel ships ``runtimes/`` as ``edgekit/_runtimes`` and ``device_profiles/`` as
``edgekit/_device_profiles`` (see pyproject.toml); a checkout or editable install uses the
top-level folders.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

_PACKAGE_DIR = Path(__file__).resolve().parent
RUNNER_NAME = "edgekit_runner.py"


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def runtimes_dir() -> Path:
    return _first_existing(_PACKAGE_DIR / "_runtimes", _PACKAGE_DIR.parent / "runtimes")


def builtin_profiles_dir() -> Path:
    return _first_existing(
        _PACKAGE_DIR / "_device_profiles", _PACKAGE_DIR.parent / "device_profiles"
    )


def runner_path() -> Path:
    return runtimes_dir() / RUNNER_NAME


@lru_cache(maxsize=1)
def runner_module() -> ModuleType:
    """The runner imported as a module, so the host runs artifacts with the device's own code."""
    spec = importlib.util.spec_from_file_location("edgekit_runner", runner_path())
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
