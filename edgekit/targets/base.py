"""The Target interface: where the runner runs (this host under limits, an SSH device, ...).

Every target runs the *same* runner (``runtimes/edgekit_runner.py``) on the same
``job.json``/``result.json`` contract (``docs/runner-protocol.md``), so the emulated path tests
exactly what a device sees. Differences in capability are data (``TargetInfo``), never
``NotImplementedError``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgekit.errors import RunnerFailedError, RemoteRuntimeMissingError


@dataclass
class RunJob:
    """One runner invocation: the job, the files it needs and the files to bring back."""

    job: dict[str, Any]
    files: dict[str, Path]  # name inside the run directory -> local file
    fetch: list[str] = field(default_factory=list)  # names inside the run directory to bring back


@dataclass
class RunResult:
    """What came back: the parsed ``result.json`` and local copies of the fetched files."""

    result: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0
    bytes_pushed: int = 0  # file bytes sent to the device for this run (0 when its cache had them)
    transfer: dict[str, float] = field(default_factory=dict)  # this run's share of Target.stats()


@dataclass
class TargetInfo:
    """What a target is and what it reproduces of the device (shown in every report)."""

    kind: str  # the registry's name of the target: "emulated" | "ssh" (edgekit.targets.registry)
    address: str  # "localhost" or "user@host:port"
    reproduced: list[str] = field(default_factory=list)  # e.g. "2 of 4 cores"
    not_reproduced: list[str] = field(default_factory=list)  # e.g. "latency is this host's"
    representative_latency: bool = True


class Target(ABC):
    """A place to run the runner. Use as a context manager: ``close()`` always cleans up."""

    @abstractmethod
    def open(self) -> None:
        """Connect / prepare. Idempotent."""

    @abstractmethod
    def run(self, job: RunJob, local_dir: Path) -> RunResult:
        """Run one job in a fresh run directory and a fresh process; fetch into ``local_dir``.

        The run directory is removed afterwards on every path.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections and remove anything this target left behind."""

    @abstractmethod
    def describe(self) -> TargetInfo:
        """What this target is and what it does (not) reproduce."""

    def stats(self) -> dict[str, float]:
        """Cumulative transfer counters (connections, bytes pushed, cache hits...); {} when none."""
        return {}

    def inference_threads(self, wanted: int | None) -> int | None:
        """Threads for a job the user set none for: ``wanted`` (the profile's), as on the device.

        A target that cannot give that many cores (this host, emulating) returns fewer.
        """
        return wanted

    def __enter__(self) -> "Target":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class DeviceShell(Protocol):
    """A shell on the device, whatever carries it: what ``provision`` and ``doctor`` need.

    Run a command, put and read files, and run the runner's probe with the device's python
    (``python``, a command that may hold arguments) or another one. A target that reaches a
    device (``SSHTarget``) provides it; open and close it as a target.
    """

    python: str

    @property
    def address(self) -> str:
        """Where the device is, for messages."""

    def exec(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run ``argv`` (every word quoted); ``(status, stdout, stderr)``."""

    def put_file(self, local: Path, remote: str) -> None:
        """Copy the local file ``local`` to the device's ``remote`` path."""

    def write_file(self, remote: str, data: bytes) -> None:
        """Write ``data`` to the device's ``remote`` path (replacing it)."""

    def read_file(self, remote: str) -> bytes | None:
        """The device file's bytes, None when it does not exist."""

    def probe(self, python: str | None = None) -> dict[str, Any]:
        """The runner's ``--probe`` facts, run with ``python`` (default: the device's)."""


RUNNER_ERROR_HINTS = {
    "runtime_missing": "install the runtime on the device (see `edgekit provision`), or pick another --format",
    "model_load": "the runtime could not load the artifact; check the format is supported by the device's runtime version",
    "bad_input": "check --inputs: one array per input name, with the model's shape",
    "bad_job": "this is a host/runner version mismatch; reinstall edgekit",
}


def parse_result(raw: bytes | str, where: str) -> dict[str, Any]:
    """Parse ``result.json`` and turn a runner-reported failure into a typed error."""
    try:
        result = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise RunnerFailedError(f"the runner on {where} wrote an unreadable result.json: {exc}") from exc
    if not isinstance(result, dict):
        raise RunnerFailedError(f"the runner on {where} wrote a result.json that is not an object")
    if not result.get("ok"):
        error = result.get("error") or {}
        kind = error.get("kind", "internal")
        message = f"runner on {where} failed ({kind}): {error.get('message', 'no message')}"
        if kind == "runtime_missing":
            raise RemoteRuntimeMissingError(message, RUNNER_ERROR_HINTS[kind])
        raise RunnerFailedError(message, RUNNER_ERROR_HINTS.get(kind), kind=kind)
    return result
