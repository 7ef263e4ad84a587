"""One remote command over an SSH connection, and what it said (the supervisor's markers included).

:meth:`RemoteCommands.exec` runs a command through the login shell, feeds its stdin and reads
stdout/stderr until it exits (or, for the supervisor, until its status line arrived). The
result, :class:`RemoteExec`, carries the exit status and what the supervisor reported on its
marker lines (see :mod:`edgekit.targets.cache`): memory, the cache's state, inline files.
"""

from __future__ import annotations

import logging
import posixpath
import select
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import ConnectionFailedError
from edgekit.targets.cache import (
    CACHE_MARK,
    END_MARK,
    PIDS_NAME,
    PYTHON_MARK,
    SETUP_MARK,
    STATUS_MARK,
    parse_marker_json,
    split_blocks,
    strip_markers,
)
from edgekit.targets.ssh_connection import SSHConnection

log = logging.getLogger(__name__)

STDERR_TAIL_BYTES = 64 * 1024
STDOUT_TAIL_BYTES = 4 << 20  # holds an inline result.json (cache.INLINE_RESULT_MAX) and more


def quote_all(parts: list[str]) -> str:
    """``parts`` as one shell command line, every word quoted."""
    return " ".join(shlex.quote(p) for p in parts)


@dataclass
class RemoteExec:
    """What one remote command did (for the supervisor: what its status line said)."""

    status: int  # exit status; -1 when the remote process died by a signal without a status
    stdout: bytes
    stderr: bytes  # without the supervisor's marker lines
    wall_s: float
    oom_before: int | None = None
    oom_after: int | None = None
    mem_total_mib: int | None = None
    mem_limit_mib: int | None = None  # the cgroup's limit, when lower than MemTotal
    peak_mib: float | None = None  # the runner's peak RSS (wait4), also after a kill
    runner_s: float | None = None  # the runner process's wall time on the device
    supervised: bool = False  # the supervisor's status line was seen
    verified: list[str] = field(default_factory=list)  # digests the device hashed and found right
    cache_bad: dict[str, str] = field(default_factory=dict)  # digest -> "missing" | "corrupt"
    cache_parts: dict[str, Any] = field(default_factory=dict)  # digest -> [part name, size] (resumable)
    cache_dir: str | None = None  # the cache's absolute path on the device
    home: str | None = None  # the login's home directory on the device
    files: dict[str, bytes] = field(default_factory=dict)  # result.json and fetched files sent inline
    file_sizes: dict[str, Any] = field(default_factory=dict)  # name -> size on the device (None: missing)
    setup_error: dict[str, Any] | None = None
    python_version: str | None = None  # from the supervisor's version check
    recovered: bool = False  # picked up after a reconnect
    channel: Any = None  # the supervisor's channel while it waits for "rm" (see SSHSession.finish)

    @property
    def killed_by_oom(self) -> bool | None:
        """True/False when the oom_kill counter says so; None when it cannot tell."""
        if self.oom_before is None or self.oom_after is None:
            return None
        return self.oom_after > self.oom_before

    def stderr_tail(self, lines: int = 20, chars: int = 2000) -> str:
        text = self.stderr.decode("utf-8", "replace").strip()
        tail = "\n".join(text.splitlines()[-lines:])
        return tail[-chars:]


class _Tail:
    """Keeps the last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]

    def value(self) -> bytes:
        return bytes(self.data[-self.limit :])


class RemoteCommands:
    """Runs commands on the device over ``connection`` (the caller holds the target's lock)."""

    def __init__(self, connection: SSHConnection) -> None:
        self.connection = connection

    def exec(self, command: str, *, timeout: float, run_dir: str | None = None,
             stdin: bytes | None = None, limit_s: float | None = None, keep_open: bool = False) -> RemoteExec:
        """Run ``command`` through the login shell, feed ``stdin``, read stdout/stderr until it exits.

        ``keep_open`` (the supervisor): stop reading once its status line has arrived and leave
        the channel open in ``done.channel`` (see :meth:`SSHSession.finish`). Over the command
        timeout, the run in ``run_dir`` is killed and ConnectionFailedError raised.
        """
        connection = self.connection
        assert connection.transport is not None
        transport = connection.transport
        out, err = _Tail(STDOUT_TAIL_BYTES), _Tail(STDERR_TAIL_BYTES)
        started = time.monotonic()
        status: int | None = None
        with connection.guard("starting a command"):
            channel = connection.open_session()
        try:
            with connection.guard("running a command"):
                channel.settimeout(timeout)
                channel.exec_command(command)
                self._feed(channel, stdin, keep_open)
                self._read(channel, out, err, keep_open, started + timeout, run_dir, limit_s or timeout)
                if channel.exit_status_ready():
                    status = channel.recv_exit_status()
                    if status == -1 and not transport.is_active():  # closed with the connection, no status
                        raise EOFError("the connection closed")
        except BaseException:
            channel.close()
            raise
        stdout, inline, info = split_blocks(out.value())
        done = RemoteExec(status=-1 if status is None else status, stdout=stdout, stderr=err.value(),
                          wall_s=time.monotonic() - started, files=inline)
        if info is not None:
            apply_status(done, info)
            if status is None:
                done.status = int(info.get("rc", -1))
        if status is None and info is not None:
            done.channel = channel
        else:
            channel.close()
        _parse_markers(done)
        return done

    def _feed(self, channel: Any, stdin: bytes | None, keep_open: bool) -> None:
        try:
            if stdin is not None:
                channel.sendall(stdin)
            if not keep_open:
                channel.shutdown_write()
        except OSError:
            if not self.connection.is_open:
                raise
            # the command ended before reading its input (e.g. python not found): its
            # exit status and output say why

    def _read(self, channel: Any, out: _Tail, err: _Tail, keep_open: bool, deadline: float,
              run_dir: str | None, limit_s: float) -> None:
        """Read stdout/stderr until the command exits (or the supervisor's status arrived)."""
        transport = self.connection.transport
        assert transport is not None
        pause = 0.002
        while True:
            busy = False
            if channel.recv_ready():
                out.add(channel.recv(65536))
                busy = True
            if channel.recv_stderr_ready():
                err.add(channel.recv_stderr(65536))
                busy = True
            if keep_open and busy and _supervisor_done(out.data, err.data):
                break  # the run is over; the supervisor waits for "rm"
            if busy:
                pause = 0.002
                continue
            if channel.exit_status_ready():
                if not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                continue
            if not transport.is_active():
                raise EOFError("the connection closed")
            if time.monotonic() > deadline:
                self.kill_run(run_dir)
                raise ConnectionFailedError(
                    f"the command on {self.connection.address} did not finish within {limit_s:g} s "
                    "(the command timeout); it was stopped",
                    "run fewer or shorter inferences (--runs, --min-seconds), or raise "
                    "--command-timeout",
                )
            # wakes at once when output arrives or the channel closes (its fileno is a pipe
            # paramiko signals), else polls the exit status and the deadline
            select.select([channel], [], [], pause)
            pause = min(pause * 2, 0.05)

    def kill_run(self, run_dir: str | None) -> None:
        """Kill the supervisor and the runner of a run that timed out (best effort)."""
        if not run_dir:
            return
        pids = shlex.quote(posixpath.join(run_dir, PIDS_NAME))
        try:
            channel = self.connection.open_session()
            try:
                channel.settimeout(30)
                channel.exec_command(f"kill -9 $(cat -- {pids} 2>/dev/null) 2>/dev/null; true")
                channel.recv_exit_status()
            finally:
                channel.close()
        except Exception as exc:  # noqa: BLE001 - best effort
            log.warning("could not stop the timed-out runner on %s: %s", self.connection.address, exc)


def apply_status(done: RemoteExec, info: dict[str, Any]) -> None:
    """Copy the supervisor's status (a dict) into ``done``."""
    done.supervised = True
    done.verified = [d for d in info.get("verified") or [] if isinstance(d, str)]
    for name in ("oom0", "oom1"):
        if not isinstance(info.get(name), int):
            info[name] = None
    done.oom_before, done.oom_after = info["oom0"], info["oom1"]
    if isinstance(info.get("memtotal_kib"), int):
        done.mem_total_mib = info["memtotal_kib"] // 1024
    for name in ("home", "cache_dir"):
        key = "cache" if name == "cache_dir" else name
        if isinstance(info.get(key), str) and info[key].startswith("/"):
            setattr(done, name, info[key])
    if isinstance(info.get("files"), dict):
        done.file_sizes = info["files"]
    if isinstance(info.get("runner_s"), (int, float)):
        done.runner_s = float(info["runner_s"])
    if isinstance(info.get("peak_kib"), int) and info["peak_kib"] > 0:
        done.peak_mib = info["peak_kib"] / 1024
    limit = info.get("memlimit")
    if isinstance(limit, int):
        limit_mib = limit >> 20
        if done.mem_total_mib is None or limit_mib < done.mem_total_mib:
            done.mem_limit_mib = limit_mib


_STATUS_BYTES = b"\n" + STATUS_MARK.encode("ascii")
_END_BYTES = b"\n" + END_MARK.encode("ascii") + b"\n"


def _supervisor_done(stdout: bytearray, stderr: bytearray) -> bool:
    """True once the supervisor's whole status line (stdout) and its end mark (stderr, after all
    the runner's own stderr) have arrived."""
    if not (stdout.endswith(b"\n") and stderr.endswith(_END_BYTES)):
        return False
    index = stdout.rfind(_STATUS_BYTES)
    return index >= 0 and stdout.find(b"\n", index + 1) == len(stdout) - 1


def _parse_markers(done: RemoteExec) -> None:
    """Read the supervisor's marker lines off stderr (and drop them from what users see)."""
    text = done.stderr.decode("utf-8", "replace")
    if "@@edgekit-" not in text:
        return
    report = parse_marker_json(text, CACHE_MARK)
    if isinstance(report, dict) and isinstance(report.get("bad"), dict):
        done.cache_bad = {str(k): str(v) for k, v in report["bad"].items()}
        done.cache_parts = report.get("parts") if isinstance(report.get("parts"), dict) else {}
        done.verified = [d for d in report.get("verified") or [] if isinstance(d, str)]
        if isinstance(report.get("cache"), str) and report["cache"].startswith("/"):
            done.cache_dir = report["cache"]
    setup = parse_marker_json(text, SETUP_MARK)
    if isinstance(setup, dict):
        done.setup_error = setup
    index = text.rfind(PYTHON_MARK)
    if index >= 0:
        done.python_version = text[index + len(PYTHON_MARK):].split("\n", 1)[0].strip()
    done.stderr = strip_markers(text).encode("utf-8")


__all__ = ["RemoteCommands", "RemoteExec", "apply_status", "quote_all"]
