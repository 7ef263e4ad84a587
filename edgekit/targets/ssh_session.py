"""The supervised run on an SSH device: one supervisor per run, its cache, its clean-up, its recovery.

For each run the host starts one *supervisor* on the device (``python -c SUPERVISOR PROTOCOL``,
its JSON spec on stdin: see :mod:`edgekit.targets.cache`). It reports what the device's cache
lacks; only that is pushed (:mod:`edgekit.targets.ssh_transfer`) and the supervisor runs again.
The run directory is removed on every path: by the waiting supervisor when the host says ``rm``
(confirmed before the next run and in ``close()``), else by ``rm -rf``; a failed removal is
retried at close. When the link drops mid-run, the session reconnects (for up to
``reconnect_s``), waits for the runner and keeps its result if it finished.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
from pathlib import Path
from typing import Any

import paramiko

from edgekit.errors import ConnectionFailedError, EdgekitError, TargetError, UsageError
from edgekit.resources import RUNNER_NAME
from edgekit.targets.cache import (
    CACHE_DIR_NAME,
    CLEANED_MARK,
    EXIT_CACHE_BAD,
    PART_SUFFIX,
    TransferStats,
    supervisor_argv,
)
from edgekit.targets.ssh_commands import RemoteCommands, RemoteExec, apply_status, quote_all
from edgekit.targets.ssh_connection import KEEPALIVE_COUNT_MAX, SSHConnection
from edgekit.targets.ssh_transfer import Entry, SSHTransfer

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "edgekit-run-"
STALE_RUN_DIR_S = 3600  # `clean_cache` also removes run directories idle this long
MAX_PUSH_ROUNDS = 4  # the first run, then up to three pushes of what arrived corrupted


class SSHSession:
    """Runs the supervisor on the device and keeps track of run directories and verified files.

    ``workdir`` is the device's work directory (``~`` is the login's home), ``site_dir`` the
    provisioned folder put first on the runner's ``sys.path`` ("" for none).
    """

    def __init__(self, connection: SSHConnection, commands: RemoteCommands, transfer: SSHTransfer,
                 stats: TransferStats, *, workdir: str, site_dir: str, command_timeout: float,
                 keepalive_s: float, reconnect_s: float) -> None:
        self.connection = connection
        self.commands = commands
        self.transfer = transfer
        self.stats = stats
        self.workdir = workdir
        self.site_dir = site_dir
        self.command_timeout = command_timeout
        self.keepalive_s = keepalive_s
        self.reconnect_s = reconnect_s
        self.verified: set[str] = set()  # cache entries the device hashed for this target
        self._pending: list[tuple[Any, str]] = []  # (channel, run dir): supervisors told to clean up
        self.leftovers: list[str] = []  # run dirs whose removal failed; retried in close()
        self._started: set[str] = set()  # run dirs a supervisor was started for (may exist)
        connection.on_close.append(self._forget_pending)

    # ------------------------------------------------------------------ paths

    def remote_workdir(self) -> str:
        """The work directory: absolute once the home directory is known, else relative to the
        login directory (commands and SFTP both start there)."""
        home = self.connection.home or "."
        workdir = self.workdir
        if workdir == "~" or workdir.startswith("~/"):
            workdir = home + workdir[1:]
        elif workdir.startswith("~"):
            raise UsageError(
                f"workdir {self.workdir!r}: '~user' paths are not supported",
                "use an absolute path or one under ~/",
            )
        elif not workdir.startswith("/"):
            workdir = posixpath.join(home, workdir)
        return posixpath.normpath(workdir)

    @property
    def cache_dir(self) -> str:
        """The device's cache folder (absolute once connected)."""
        return posixpath.join(self.remote_workdir(), CACHE_DIR_NAME)

    def new_run_dir(self) -> str:
        """A fresh run directory's path (the supervisor creates it)."""
        return posixpath.join(self.remote_workdir(), RUN_DIR_PREFIX + uuid.uuid4().hex)

    def python_command(self, python_argv: list[str]) -> list[str]:
        """The python argv with a leading ``~/`` resolved (the words are quoted later): under the
        home directory, or relative to the login directory (which is home) while it is unknown."""
        first, rest = python_argv[0], python_argv[1:]
        home = self.connection.home
        if first.startswith("~/"):
            first = (home + first[1:]) if home else "." + first[1:]
        return [first, *rest]

    # ------------------------------------------------------------------ one supervised run

    def supervised(self, run_dir: str, files: dict[str, Path], job: dict[str, Any] | None,
                   args: list[str], doing: str, python_argv: list[str],
                   fetch: list[str] | None = None) -> RemoteExec:
        """Run the runner under the supervisor in ``run_dir``, pushing what its cache lacks.

        The first attempt pushes nothing: the supervisor hashes every file this target has not
        verified yet and reports the missing and corrupt ones (and any unfinished transfer of
        them), having checked its Python first, so no byte moves to a device that cannot run
        the runner. Those are pushed (resumed where possible) and the run is tried again; a file
        that arrives corrupted is sent again, twice at most.
        """
        entries = self.transfer.entries(files)
        unique = {e.digest: e for e in entries}
        self.connection.ensure_open()
        self.reap_finished(wait=False)
        deadline = time.monotonic() + self.command_timeout
        pushed: dict[str, str] = {}  # digest -> its part, pushed for this run
        done: RemoteExec | None = None
        for attempt in range(MAX_PUSH_ROUNDS):
            verify = [[d, pushed.get(d)] for d in unique if d not in self.verified]
            spec = self._spec(run_dir, verify, entries, job, args, fetch)
            done = self._exec_supervisor(spec, run_dir, deadline, doing, python_argv)
            self.verified.update(d for d in done.verified if d in unique)
            if done.status != EXIT_CACHE_BAD or not done.cache_bad:
                break
            self._note_bad(done, pushed)
            if attempt == MAX_PUSH_ROUNDS - 1:
                raise TargetError(
                    f"the files pushed to {self.connection.address} kept arriving corrupted "
                    f"(sha256 mismatch: {', '.join(d[:12] for d in done.cache_bad)})",
                    "check the device's storage (e.g. its SD card) and the network",
                )
            missing = [unique[d] for d in done.cache_bad if d in unique]
            resume = {e.digest: self._resumable(done.cache_parts, e) for e in missing}
            needed = sum(e.size - resume[e.digest][1] for e in missing)
            cache_dir = done.cache_dir or self.cache_dir
            for entry in missing:
                pushed[entry.digest] = self.transfer.push(cache_dir, entry, *resume[entry.digest], needed,
                                                          self.remote_workdir)
        assert done is not None
        for entry in entries:
            if entry.digest not in pushed:
                self.stats.files_cached += 1
                self.stats.bytes_cached += entry.size
        return done

    def _spec(self, run_dir: str, verify: list[list[Any]], entries: list[Entry], job: dict[str, Any] | None,
              args: list[str], fetch: list[str] | None) -> dict[str, Any]:
        """The supervisor's JSON spec (its stdin) for one attempt."""
        return {
            "cache": self.cache_dir,
            "run_dir": run_dir,
            "verify": verify,
            "link": [[e.name, e.digest] for e in entries],
            "job": job,
            "runner": RUNNER_NAME,
            "args": args,
            "site_dirs": [self.site_dir] if self.site_dir else [],
            "fetch": list(fetch or []),
            "await_cleanup": True,
            # an unfinished transfer idle this long is not being written: resume it
            "resume_idle_s": min(10.0, max(self.keepalive_s, 0.2) * KEEPALIVE_COUNT_MAX),
        }

    def _note_bad(self, done: RemoteExec, pushed: dict[str, str]) -> None:
        """Forget what the device found missing or corrupt (it is pushed again)."""
        for digest in done.verified:
            pushed.pop(digest, None)  # stored in the cache now
        for digest, why in done.cache_bad.items():
            self.verified.discard(digest)
            pushed.pop(digest, None)
            if why == "corrupt":
                self.stats.corrupt_entries += 1
                log.warning("a file in the cache of %s (sha256 %s) did not match its digest; "
                            "pushing it again", self.connection.address, digest[:12])

    @staticmethod
    def _resumable(parts: dict[str, Any], entry: Entry) -> tuple[str | None, int]:
        """The unfinished transfer of ``entry`` the device reported: ``(name, size)`` or ``(None, 0)``."""
        found = parts.get(entry.digest)
        if (isinstance(found, list) and len(found) == 2 and isinstance(found[0], str)
                and found[0].startswith(entry.digest + PART_SUFFIX) and "/" not in found[0]
                and isinstance(found[1], int) and 0 < found[1] < entry.size):
            return found[0], found[1]
        return None, 0

    def _exec_supervisor(self, spec: dict[str, Any], run_dir: str, deadline: float, doing: str,
                         python_argv: list[str]) -> RemoteExec:
        remaining = max(deadline - time.monotonic(), 1.0)
        self._started.add(run_dir)
        command = quote_all([*self.python_command(python_argv), *supervisor_argv()])
        try:
            done = self.commands.exec(command, timeout=remaining, run_dir=run_dir,
                                      stdin=json.dumps(spec).encode("utf-8") + b"\n",
                                      limit_s=self.command_timeout, keep_open=True)
        except ConnectionFailedError as exc:
            if self.connection.is_open:  # the command timeout: the connection is fine, the run was stopped
                raise
            done = self._recover(run_dir, deadline, exc, doing)
        if done.home and not self.connection.home:
            self.connection.home = done.home
        return done

    def _recover(self, run_dir: str, deadline: float, error: ConnectionFailedError, doing: str) -> RemoteExec:
        """The link dropped while the supervisor ran: reconnect, wait for it, read its status."""
        log.warning("lost the connection to %s while %s; reconnecting", self.connection.address, doing)
        give_up = time.monotonic() + self.reconnect_s
        while True:
            try:
                self.connection.open()
                break
            except ConnectionFailedError as exc:
                if time.monotonic() + 0.5 > give_up:
                    raise ConnectionFailedError(
                        f"{error.message}; reconnecting failed for {self.reconnect_s:g} s ({exc.message})",
                        "check the device and the network, then run again: files already sent stay in "
                        f"the device's cache; the run directory {posixpath.basename(run_dir)} is removed "
                        "by the next `edgekit device clean`",
                    ) from None
                time.sleep(0.5)
        # wait for the supervisor (it outlives the session), then read what it left
        script = ('cd "$1" 2>/dev/null || exit 0; p=$(cut -d" " -f1 .edgekit-pids 2>/dev/null); '
                  'while [ -n "$p" ] && kill -0 "$p" 2>/dev/null; do sleep 0.2; done; '
                  'cat .edgekit-status 2>/dev/null; true')
        remaining = max(deadline - time.monotonic(), 5.0)
        waited = self.commands.exec(quote_all(["/bin/sh", "-c", script, "edgekit", run_dir]),
                                    timeout=remaining, run_dir=run_dir)
        try:
            info = json.loads(waited.stdout.decode("utf-8", "replace").strip() or "null")
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise ConnectionFailedError(
                f"{error.message}; after reconnecting, the run had left no result",
                "check the device and the network, then run again: files already sent stay in the "
                "device's cache",
            )
        done = RemoteExec(status=int(info.get("rc", -1)), stdout=b"", stderr=b"", wall_s=0.0, recovered=True)
        apply_status(done, info)
        return done

    # ------------------------------------------------------------------ clean-up

    def _finish(self, done: RemoteExec, run_dir: str) -> bool:
        """Tell the supervisor still waiting on ``done.channel`` to remove its run directory.

        No round trip: the answer is collected by :meth:`reap_finished` (before the next run,
        at ``close()``). False when the supervisor could not be told.
        """
        channel, done.channel = done.channel, None
        if channel is None:
            return False
        try:
            channel.sendall(b"rm\n")
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            channel.close()
            return False
        self._pending.append((channel, run_dir))
        return True

    def has_pending(self) -> bool:
        """Supervisors were told to clean up and have not confirmed yet."""
        return bool(self._pending)

    def reap_finished(self, wait: bool) -> None:
        """Confirm the clean-ups handed to supervisors; ``rm -rf`` what one did not remove."""
        waiting: list[tuple[Any, str]] = []
        for channel, run_dir in self._pending:
            if not channel.exit_status_ready() and not wait and self.connection.is_open:
                waiting.append((channel, run_dir))
                continue
            deadline = time.monotonic() + 30
            while not channel.exit_status_ready() and self.connection.is_open and time.monotonic() < deadline:
                channel.status_event.wait(0.05)
            text = b""
            try:
                while channel.recv_stderr_ready():
                    text += channel.recv_stderr(65536)
            except (OSError, EOFError, paramiko.SSHException):
                pass
            channel.close()
            if f"{CLEANED_MARK}ok".encode("ascii") in text:
                self._started.discard(run_dir)
            else:
                self.remove_run_dir(run_dir)
        self._pending = waiting

    def remove_run_dir(self, run_dir: str, done: RemoteExec | None = None) -> None:
        """Remove the run directory: by its supervisor when it still waits (no extra command),
        else ``rm -rf``. Never raises (a failure is retried in ``close()``)."""
        if not run_dir or RUN_DIR_PREFIX not in posixpath.basename(run_dir) or run_dir not in self._started:
            return  # never created: the run failed before its supervisor started
        if done is not None and done.channel is not None and self._finish(done, run_dir):
            return
        try:
            self.connection.ensure_open()
            done = self.commands.exec(quote_all(["rm", "-rf", "--", run_dir]), timeout=60)
            if done.status != 0:
                raise TargetError(done.stderr_tail(3))
            self._started.discard(run_dir)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
            log.warning("could not remove %s on %s: %s", run_dir, self.connection.address, exc)
            if run_dir not in self.leftovers:
                self.leftovers.append(run_dir)

    def _forget_pending(self) -> None:
        """The connection closed: clean-ups not confirmed are done again later."""
        for _channel, run_dir in self._pending:
            if run_dir not in self.leftovers:
                self.leftovers.append(run_dir)
        self._pending = []

    def remove_leftovers(self) -> None:
        """Remove the run directories earlier clean-ups left (reconnecting once for them)."""
        if not self.leftovers:
            return
        try:
            self.connection.ensure_open()
        except EdgekitError as exc:
            log.warning("could not reconnect to %s to remove %s: %s", self.connection.address,
                        ", ".join(self.leftovers), exc)
        for run_dir in list(self.leftovers):
            self.leftovers.remove(run_dir)
            if self.connection.is_open:
                self.remove_run_dir(run_dir)

    def clean_cache(self) -> dict[str, Any]:
        """Remove the device's cache (and run directories idle for an hour); say what went."""
        self.connection.ensure_open()
        self.reap_finished(wait=True)
        sftp = self.connection.sftp()  # also learns the home directory: the paths are absolute
        cache_dir = self.cache_dir
        entries, size = 0, 0
        with self.connection.guard("listing the cache"):
            try:
                for attrs in sftp.listdir_attr(cache_dir):
                    entries += 1
                    size += attrs.st_size or 0
            except FileNotFoundError:
                pass
        stale: list[str] = []
        with self.connection.guard("listing the work directory"):
            try:
                now = time.time()
                for attrs in sftp.listdir_attr(self.remote_workdir()):
                    if (attrs.filename.startswith(RUN_DIR_PREFIX)
                            and now - (attrs.st_mtime or now) > STALE_RUN_DIR_S):
                        stale.append(posixpath.join(self.remote_workdir(), attrs.filename))
            except FileNotFoundError:
                pass
        done = self.commands.exec(quote_all(["rm", "-rf", "--", cache_dir, *stale]), timeout=self.command_timeout)
        if done.status != 0:
            raise TargetError(f"could not remove {cache_dir!r} on {self.connection.address}: {done.stderr_tail(3)}")
        self.verified.clear()
        return {"cache_dir": cache_dir, "entries": entries, "bytes": size, "run_dirs": len(stale)}


__all__ = ["RUN_DIR_PREFIX", "SSHSession"]
