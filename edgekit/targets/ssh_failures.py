"""What went wrong on an SSH device, as a typed edgekit error.

A supervisor or runner that exits without a readable result (a missing or too old Python, a
full disk, the OOM killer, a signal) and a runner that reports a failure are mapped here to
``RemoteRuntimeMissingError``, ``RemoteDiskFullError``, ``RemoteOutOfMemoryError``,
``RunnerFailedError`` or ``TargetError``, each with a message that names the device and a hint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from edgekit.errors import (
    RemoteDiskFullError,
    RemoteOutOfMemoryError,
    RemoteRuntimeMissingError,
    RunnerFailedError,
    TargetError,
)
from edgekit.targets.base import parse_result
from edgekit.targets.cache import EXIT_PYTHON_TOO_OLD, MIN_PYTHON
from edgekit.targets.ssh_commands import RemoteExec

RUNNER_HINT_MISMATCH = "this is a host/runner version mismatch; reinstall edgekit"
OOM_HINT = (
    "use a smaller model, a lower precision (e.g. int8), fewer threads, or close other programs "
    "on the device"
)
DISK_FULL_HINT = ("free space on the device (`edgekit device clean` empties edgekit's cache), or set "
                  "ssh.workdir in the device profile to a larger filesystem")

_OOM_STDERR = re.compile(
    r"MemoryError|std::bad_alloc|Cannot allocate memory|Failed to allocate memory|out of memory",
    re.IGNORECASE,
)
DISK_FULL_STDERR = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)
_ENOSPC = {28, 122}  # ENOSPC, EDQUOT


@dataclass(frozen=True)
class SSHFailures:
    """Maps one device's failures to errors; ``where`` is its address, the rest describe it."""

    where: str
    profile_name: str | None = None
    memory_mib: int | None = None

    def result(self, done: RemoteExec, raw: bytes | None, python: str) -> dict:
        """The parsed ``result.json`` (``raw``, None when missing), or the typed error of the run."""
        self.raise_for_setup(done, python)
        signal_death = done.status in (-1, 137) or done.status > 128
        if raw is None:
            raise self.error(done, "running the job", python)
        try:
            return parse_result(raw, self.where)
        except RunnerFailedError as exc:
            if exc.kind is None and signal_death:  # a truncated result.json of a killed runner
                raise self.error(done, "running the job", python) from None
            if exc.kind == "out_of_memory":
                raise RemoteOutOfMemoryError(
                    f"the model ran out of memory on the device {self.where}: {self.memory_text(done, raw)} "
                    f"({exc.message})",
                    OOM_HINT,
                ) from None
            if DISK_FULL_STDERR.search(exc.message):
                raise RemoteDiskFullError(
                    f"the device {self.where} ran out of disk space ({exc.message})", DISK_FULL_HINT
                ) from None
            raise

    def raise_for_setup(self, done: RemoteExec, python: str) -> None:
        """Errors of the supervisor itself (its Python, the run directory)."""
        if done.status == EXIT_PYTHON_TOO_OLD or done.status in (126, 127):
            raise self.error(done, "starting the runner", python)
        if done.setup_error is not None:
            raise self.error(done, "preparing the run", python)

    def memory_text(self, done: RemoteExec, raw: bytes | None = None) -> str:
        """``peak so far N MiB, the device (profile X) has M MiB[, and ... cgroup ... L MiB]``."""
        peak = done.peak_mib
        if raw is not None:
            try:
                kib = (json.loads(raw).get("memory") or {}).get("peak_rss_kib")
                peak = max(peak or 0, kib / 1024) if kib else peak
            except (ValueError, AttributeError, TypeError):
                pass
        parts = [f"peak so far {peak:.0f} MiB" if peak else "peak unknown"]
        name = f" (profile {self.profile_name})" if self.profile_name else ""
        total = self.memory_mib or done.mem_total_mib
        if total:
            parts.append(f"the device{name} has {total} MiB")
        text = ", ".join(parts)
        if done.mem_limit_mib is not None:
            text += f", and the runner's cgroup was limited to {done.mem_limit_mib} MiB"
        return text

    def error(self, done: RemoteExec, doing: str, python: str) -> TargetError:
        """The typed error for a supervisor or runner that exited without a (readable) result.

        ``python`` is the interpreter (the first word of the python command) that ran it.
        """
        found = self._python_error(done, python) or self._setup_error(done, doing)
        if found is not None:
            return found
        where = self.where
        tail = done.stderr_tail()
        shown_tail = f"; its last output:\n{tail}" if tail else " and printed nothing"
        if DISK_FULL_STDERR.search(tail):
            return RemoteDiskFullError(
                f"the device {where} ran out of disk space while {doing}{shown_tail}",
                DISK_FULL_HINT,
            )
        oom = done.killed_by_oom
        killed = done.status in (137, -1)
        if (killed and oom) or (done.status == 137 and oom is None) or _OOM_STDERR.search(tail):
            how = "by the kernel OOM killer" if oom else "(out of memory)"
            return RemoteOutOfMemoryError(
                f"the model ran out of memory on the device {where}: the runner was killed {how}; "
                f"{self.memory_text(done)}",
                OOM_HINT,
            )
        if killed:
            signal_text = "by SIGKILL" if done.status == 137 else "by a signal"
            return RunnerFailedError(
                f"the runner on {where} was killed {signal_text} (not by the OOM killer) "
                f"without writing result.json{shown_tail}",
                "something on the device stopped it (a watchdog, a timeout, a user)",
            )
        if done.status < 0 or done.status > 128:
            how = f"died by signal {done.status - 128}" if done.status > 128 else "died"
        else:
            how = f"exited with status {done.status}"
        return RunnerFailedError(
            f"the runner on {where} {how} without writing result.json{shown_tail}",
            "the runner needs Python >= 3.6 with numpy on the device; pass --python to pick another interpreter",
        )

    def _python_error(self, done: RemoteExec, python: str) -> TargetError | None:
        """The device's Python is too old, missing or not executable."""
        if done.status == EXIT_PYTHON_TOO_OLD and done.python_version:
            version, _, executable = done.python_version.partition(" ")
            floor = ".".join(str(v) for v in MIN_PYTHON)
            return RemoteRuntimeMissingError(
                f"the device's Python is too old: {executable or python} on {self.where} is Python {version}, "
                f"the runner needs Python >= {floor}",
                f"install Python >= {floor} on the device (see `edgekit provision`), or pass --python "
                "with a newer interpreter",
            )
        if done.status in (127, 126) and not done.supervised:
            reason = "not found" if done.status == 127 else "not executable"
            return RemoteRuntimeMissingError(
                f"{python} {reason} on the device {self.where}",
                "install Python 3 on the device (with numpy and a runtime: see `edgekit provision`), "
                "or pass --python with the interpreter's path",
            )
        return None

    def _setup_error(self, done: RemoteExec, doing: str) -> TargetError | None:
        """The supervisor could not prepare the run (its run directory, the cache)."""
        if done.setup_error is None:
            return None
        what = done.setup_error.get("doing", doing)
        message = done.setup_error.get("message", "")
        if done.setup_error.get("errno") in _ENOSPC or DISK_FULL_STDERR.search(message):
            return RemoteDiskFullError(f"the device {self.where} ran out of disk space while {what}: {message}",
                                       DISK_FULL_HINT)
        return TargetError(f"{what} on {self.where} failed: {message}",
                           "set a writable ssh.workdir in the device profile")


__all__ = ["DISK_FULL_HINT", "OOM_HINT", "RUNNER_HINT_MISMATCH", "SSHFailures"]
