"""Files to and from an SSH device, by SFTP over the target's one connection.

Pushes go into the device's content-addressed cache (:mod:`edgekit.targets.cache`): each file
is written to ``<cache>/<sha256>.part-<token>`` (one part per writer, resumed after a dropped
link), and the supervisor hashes it before it becomes the cache entry. Results come back from
the supervisor's stdout when small, else by SFTP.
"""

from __future__ import annotations

import os
import posixpath
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paramiko

from edgekit.errors import (
    ConnectionFailedError,
    EdgekitError,
    RemoteDiskFullError,
    RunnerFailedError,
    TargetError,
    UsageError,
)
from edgekit.targets.cache import PART_SUFFIX, TransferStats, file_digest, read_local
from edgekit.targets.ssh_commands import RemoteCommands, RemoteExec, quote_all
from edgekit.targets.ssh_connection import SSHConnection
from edgekit.targets.ssh_failures import DISK_FULL_HINT, RUNNER_HINT_MISMATCH

PUSH_CHUNK = 32768
PROGRESS_MIN_BYTES = 4 << 20  # pushes smaller than this show no progress bar


@dataclass
class Entry:
    """One file of a run: its name in the run directory and its cache identity."""

    name: str
    local: Path
    digest: str
    size: int


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class SSHTransfer:
    """Moves files over ``connection``'s SFTP session; counts what it moved in ``stats``.

    ``token`` names this target's unfinished transfers; ``progress`` (a ``Progress``) shows
    pushes of large files.
    """

    def __init__(self, connection: SSHConnection, commands: RemoteCommands, stats: TransferStats,
                 token: str, progress: Any = None) -> None:
        self.connection = connection
        self.commands = commands
        self.stats = stats
        self.token = token
        self.progress = progress

    @staticmethod
    def entries(files: dict[str, Path]) -> list[Entry]:
        """The run's files with their sha256 and size (hashed once per file version)."""
        entries = []
        for name, local in files.items():
            try:
                digest, size = file_digest(local)
            except OSError as exc:
                raise UsageError(f"cannot read the job file {local}: {exc.strerror or exc}") from None
            entries.append(Entry(name, Path(local), digest, size))
        return entries

    def push(self, cache_dir: str, entry: Entry, resume_from: str | None, offset: int, needed: int,
             workdir: Callable[[], str]) -> str:
        """Send ``entry`` to ``<cache>/<sha256>.part-<token>``, from ``offset`` of the unfinished
        transfer ``resume_from`` (taken over by renaming it); the part's name.

        Each writer has its own part (two deploys to one device may push the same file at the
        same time); the device hashes a part before it becomes the cache entry. ``needed`` (the
        bytes this run still pushes) and ``workdir()`` (the work directory) explain a full disk.
        """
        sftp = self.connection.sftp()
        part = posixpath.join(cache_dir, entry.digest + PART_SUFFIX + self.token)
        if resume_from is not None and posixpath.join(cache_dir, resume_from) != part:
            try:
                sftp.posix_rename(posixpath.join(cache_dir, resume_from), part)
            except (OSError, paramiko.SSHException):  # taken by another writer meanwhile: start over
                offset = 0
        sent = [0]
        try:
            self._send(sftp, part, entry, offset, sent)
        except ConnectionFailedError as exc:
            done = offset + sent[0]
            raise ConnectionFailedError(
                f"{exc.message} ({_mib(done)} of {_mib(entry.size)} sent)",
                "check the device and the network, then run again: what was sent stays in the device's "
                "cache and the transfer resumes from there",
            ) from None
        except TargetError as exc:
            self.remove_quietly(part)
            free_kib = self._free_kib(cache_dir)
            if free_kib is not None and free_kib * 1024 < needed + (1 << 20):
                raise RemoteDiskFullError(
                    f"the device's disk is full: {free_kib // 1024} MiB free under {workdir()!r} "
                    f"on {self.connection.address}, the run needs {needed / (1 << 20):.1f} MiB",
                    DISK_FULL_HINT,
                ) from None
            raise TargetError(f"could not push {entry.name!r} to {self.connection.address}: {exc}") from None
        self.stats.files_pushed += 1
        self.stats.bytes_resumed += offset
        return posixpath.basename(part)

    def _send(self, sftp: paramiko.SFTPClient, part: str, entry: Entry, offset: int, sent: list[int]) -> None:
        """Write ``entry`` from ``offset`` into ``part``; ``sent[0]`` counts the bytes as they go."""
        show = getattr(self.progress, "task", None) if entry.size - offset >= PROGRESS_MIN_BYTES else None
        with self.connection.guard(f"pushing {entry.name!r}"), \
                (show(f"pushing {entry.name}", total=entry.size, unit="B") if show else nullcontext()) as task:
            with sftp.open(part, "ab" if offset else "wb") as remote:
                remote.set_pipelined(True)
                for block in read_local(entry.local, offset, PUSH_CHUNK):
                    remote.write(block)
                    sent[0] += len(block)
                    self.stats.bytes_pushed += len(block)
                    if task is not None:
                        task.update(offset + sent[0])
            # paramiko drops the replies to pipelined writes (a full disk among them): check
            # the size that arrived, the device checks the sha256 before the file is used
            arrived = sftp.stat(part).st_size
            if arrived != entry.size:
                raise OSError(f"{arrived} of {entry.size} bytes arrived")

    def remove_quietly(self, path: str) -> None:
        """Remove a remote file, ignoring every failure."""
        try:
            self.connection.sftp().remove(path)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def _free_kib(self, path: str) -> int | None:
        try:
            done = self.commands.exec(quote_all(["df", "-Pk", "--", path]), timeout=30)
        except EdgekitError:
            return None
        lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            return int(lines[-1].split()[3])
        except (IndexError, ValueError):
            return None

    def read(self, path: str) -> bytes | None:
        """A remote file's bytes; None when it does not exist."""
        sftp = self.connection.sftp()
        with self.connection.guard(f"reading {posixpath.basename(path)}"):
            try:
                with sftp.open(path, "r") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None

    def write(self, path: str, data: bytes) -> None:
        """Write ``data`` to the remote file ``path`` (replacing it)."""
        sftp = self.connection.sftp()
        with self.connection.guard(f"writing {posixpath.basename(path)}"):
            with sftp.open(path, "wb") as handle:
                handle.write(data)

    def put(self, local: Path, path: str) -> None:
        """Copy the local file ``local`` to the remote ``path``."""
        sftp = self.connection.sftp()
        with self.connection.guard(f"pushing {Path(local).name}"):
            sftp.put(str(local), path)

    def fetch(self, run_dir: str, names: list[str], local_dir: Path, done: RemoteExec) -> dict[str, Path]:
        """Bring back ``names``: from the supervisor's stdout when it sent them, else by SFTP."""
        files: dict[str, Path] = {}
        address = self.connection.address
        for name in names:
            local = local_dir / name
            local.parent.mkdir(parents=True, exist_ok=True)
            if name in done.file_sizes and done.file_sizes[name] is None:
                raise RunnerFailedError(
                    f"the runner on {address} reported success but did not write {name!r}",
                    RUNNER_HINT_MISMATCH,
                )
            if name in done.files:
                tmp = local.with_name(f".{local.name}.part")
                tmp.write_bytes(done.files[name])
                os.replace(tmp, local)
            else:
                sftp = self.connection.sftp()
                with self.connection.guard(f"fetching {name}"):
                    try:
                        sftp.get(posixpath.join(run_dir, name), str(local))
                    except FileNotFoundError:
                        raise RunnerFailedError(
                            f"the runner on {address} reported success but did not write {name!r}",
                            RUNNER_HINT_MISMATCH,
                        ) from None
            self.stats.bytes_fetched += local.stat().st_size
            files[name] = local
        return files


__all__ = ["Entry", "SSHTransfer"]
