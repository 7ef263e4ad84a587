"""Where the runner, the other device-side programs and the built-in device profiles are.

The wheel ships ``runtimes/`` as ``edgekit/_runtimes`` and ``device_profiles/`` as
``edgekit/_device_profiles`` (see pyproject.toml); a checkout or editable install uses the
top-level folders. Every program that runs on a device (or, for ``--emulate``, in a limited
child of this host) is a real file in ``runtimes/`` under the runner's rules (runtimes/README.md)
and is read from there, never built as a string.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

_PACKAGE_DIR = Path(__file__).resolve().parent
RUNNER_NAME = "edgekit_runner.py"
SUPERVISOR_NAME = "edgekit_supervisor.py"  # edgekit.targets.cache: one run on an SSH device
FACTS_NAME = "device_facts.py"  # edgekit.provision: what the device has
SITE_INSTALL_NAME = "site_install.py"  # edgekit.provision: unpack wheels into the site folder
LIMITS_BOOTSTRAP_NAME = "limits_bootstrap.py"  # edgekit.targets.limits: enter limits, exec the runner
IMAGE_VERSIONS_NAME = "image_versions.py"  # edgekit.emulator: what the built root filesystem has
NAMESPACE_SCRIPT_NAME = "emulator_namespace.sh"  # edgekit.emulator: the emulated device's PID 1
# every program in runtimes/ (tests/runtimes/test_device_programs.py holds each to its rules)
PROGRAM_NAMES = (RUNNER_NAME, SUPERVISOR_NAME, FACTS_NAME, SITE_INSTALL_NAME, LIMITS_BOOTSTRAP_NAME,
                 IMAGE_VERSIONS_NAME, NAMESPACE_SCRIPT_NAME)


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


def program_path(name: str) -> Path:
    """A device-side program shipped beside the runner (one of the ``*_NAME`` files above)."""
    return runtimes_dir() / name


@lru_cache(maxsize=None)
def program_text(name: str) -> str:
    """The source of a device-side program, sent to the device as it is (``python -c``, ``sh -c``)."""
    return program_path(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def runner_module() -> ModuleType:
    """The runner imported as a module, so the host runs artifacts with the device's own code."""
    spec = importlib.util.spec_from_file_location("edgekit_runner", runner_path())
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
