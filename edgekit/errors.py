"""Typed errors raised by edgekit's library code.

Only the CLI turns these into messages and exit codes. Each error's ``str()`` is the one-line
message (what is wrong); ``hint`` says what to do. Exit codes are documented in ``ExitCode``.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the ``edgekit`` command (also listed in the README)."""

    OK = 0
    FAILURE = 1  # a check failed (parity with --strict, a regression in compare)
    USAGE = 2  # bad arguments, unknown device, bad model reference, bad recipe
    MISSING_DEPENDENCY = 3  # an optional extra or system package is not installed
    EXPORT = 4  # the model could not be exported or does not match torch
    TARGET = 5  # the device could not be reached or the run on it failed
    HOST_KEY = 6  # SSH host key unknown or changed
    INTERNAL = 70  # a bug in edgekit: rerun with --debug
    INTERRUPTED = 130  # Ctrl-C


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def one_line(self, cli: bool = False) -> str:
        """The message and the hint on one line; ``cli``: Python API spellings as CLI flags."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return cli_spelling(text) if cli else text


# Library messages speak the Python API (``calibration=``, ``options={'int8_mode': 'dynamic'}``);
# the CLI shows the same advice as flags. One table, applied in order, so every hint that names
# an API parameter reaches a CLI user as the flag that sets it (tests/test_bad_inputs.py checks
# every error string in the package against it).
_FLAG_OF_OPTION = {
    "int8_mode": "--int8-mode", "calibration_method": "--calibration-method",
    "weight_rounding": "--weight-rounding", "format": "--format", "precision": "--precision",
}
_CLI_SPELLINGS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"\bcalibration=(?= |$)"), "--calibration DATA"),
    (re.compile(r"\boptions=\{'io_dtype': 'float32'\}"), "--float-io"),
    (re.compile(r"\boptions=\{'(channels_last|dynamic_batch)': True\}"),
     lambda m: "--" + m.group(1).replace("_", "-")),
    (re.compile(r"\boptions=\{'(\w+)': '([\w.+-]+)'\}"), lambda m: f"--{m.group(1).replace('_', '-')} {m.group(2)}"),
    (re.compile(r"\b(" + "|".join(_FLAG_OF_OPTION) + r")='([\w.+-]+)'"),
     lambda m: f"{_FLAG_OF_OPTION[m.group(1)]} {m.group(2)}"),
    (re.compile(r"\b(?:input_shape|example_inputs)=\(?(?:torch\.zeros\()?\(?([\d, ]+)\)\)?,?\)?"),
     lambda m: "--input-shape " + ",".join(m.group(1).replace(" ", "").strip(",").split(","))),
    (re.compile(r"\bwithout strict\b"), "without --strict"),
    # an option named with its value ("unknown int8_mode 'full'") or as the subject of a refusal;
    # lists of option names (profile YAML keys) keep their spelling
    (re.compile(r"\b(int8_mode|calibration_method|weight_rounding) (?=')"), lambda m: f"{_FLAG_OF_OPTION[m.group(1)]} "),
    (re.compile(r"\b(dynamic_batch|channels_last) (?=is not supported|needs)"), lambda m: "--" + m.group(1).replace("_", "-") + " "),
]


def cli_spelling(text: str) -> str:
    """``text`` with the Python API's parameter spellings replaced by the CLI flags that set them."""
    for pattern, replacement in _CLI_SPELLINGS:
        text = pattern.sub(replacement, text)
    return text


class UsageError(EdgekitError):
    exit_code = ExitCode.USAGE


class ModelError(UsageError):
    """The MODEL argument cannot be resolved or loaded."""


class DataError(UsageError):
    """A data set or input file is missing or malformed."""


class ProfileError(UsageError):
    """A device profile is unknown or invalid."""


class RecipeError(UsageError):
    """A compression recipe or step configuration is invalid."""


class MissingDependencyError(EdgekitError):
    exit_code = ExitCode.MISSING_DEPENDENCY

    def __init__(self, message: str, hint: str | None = None, extra: str | None = None) -> None:
        super().__init__(message, hint)
        self.extra = extra


class ExportError(EdgekitError):
    exit_code = ExitCode.EXPORT


class UnsupportedPrecisionError(ExportError, UsageError):
    exit_code = ExitCode.USAGE


class UnsupportedOpError(ExportError):
    """The converter cannot handle an operator of the model."""


class ConverterError(ExportError):
    """A converter (torch.onnx, litert-torch, PT2E, ONNX Runtime quantization) failed on the model.

    ``edgekit.export.export`` names the module it failed in and the formats and modes that do
    convert the model (see ``edgekit.export.failures``).
    """


class ParityError(ExportError):
    """An artifact's outputs differ from the torch model's beyond the tolerance."""

    exit_code = ExitCode.FAILURE


class TargetError(EdgekitError):
    exit_code = ExitCode.TARGET


class ConnectionFailedError(TargetError):
    pass


class AuthFailedError(TargetError):
    pass


class HostKeyUnknownError(TargetError):
    exit_code = ExitCode.HOST_KEY


class HostKeyChangedError(TargetError):
    exit_code = ExitCode.HOST_KEY


class RemoteRuntimeMissingError(TargetError):
    pass


class RemoteOutOfMemoryError(TargetError):
    pass


class RemoteDiskFullError(TargetError):
    pass


class RunnerFailedError(TargetError):
    """The runner reported an error, or died without writing its result."""

    def __init__(self, message: str, hint: str | None = None, kind: str | None = None) -> None:
        super().__init__(message, hint)
        self.kind = kind


class RegressionError(EdgekitError):
    """``edgekit compare`` found a regression over the threshold."""

    exit_code = ExitCode.FAILURE


__all__ = [
    "AuthFailedError",
    "ConnectionFailedError",
    "ConverterError",
    "DataError",
    "EdgekitError",
    "ExitCode",
    "ExportError",
    "HostKeyChangedError",
    "HostKeyUnknownError",
    "MissingDependencyError",
    "ModelError",
    "ParityError",
    "ProfileError",
    "RecipeError",
    "RegressionError",
    "RemoteDiskFullError",
    "RemoteOutOfMemoryError",
    "RemoteRuntimeMissingError",
    "RunnerFailedError",
    "TargetError",
    "UnsupportedOpError",
    "UnsupportedPrecisionError",
    "UsageError",
]
