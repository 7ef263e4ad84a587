"""An SSH device as a :class:`~edgekit.targets.base.Target` (paramiko only, no ``ssh`` binary).

:class:`SSHTarget` composes four parts over one connection per target:

- :mod:`~edgekit.targets.ssh_connection`: connect (through ``ProxyJump`` hosts), check the host
  key before any credential is offered, authenticate, keep the link alive, start SFTP on use;
- :mod:`~edgekit.targets.ssh_transfer`: push files into the device's cache (resumable), fetch;
- :mod:`~edgekit.targets.ssh_session`: the supervised run (the device side is
  :mod:`edgekit.targets.cache`), its clean-up and its recovery after a dropped link;
- :mod:`~edgekit.targets.ssh_failures`: a failed run as a typed edgekit error.

``run(job, local_dir)``:

1. hashes the runner and ``job.files`` on the host (once per file version);
2. starts one *supervisor* on the device (``python -c SUPERVISOR PROTOCOL``, its JSON spec on
   stdin, so no path or argument is ever a shell word; the few other commands quote every word
   with ``shlex.quote``). It checks its Python against the runner's floor (3.6), hashes every
   cache entry this target has not verified yet and reports what is missing or corrupt: only
   those are pushed, by SFTP, into ``<workdir>/cache/<sha256>.part-<token>`` (resuming an
   interrupted transfer), and the supervisor runs again, verifying each transfer by sha256
   before it becomes ``<workdir>/cache/<sha256>``. A warm run pushes nothing and costs one
   command;
3. the supervisor creates ``<workdir>/edgekit-run-<uuid>`` (mode 0700) with hard links into
   the cache, forks the runner, and reports its exit status, its peak RSS (``wait4``, also
   after an OOM kill) and the kernel's ``oom_kill`` counter around the run; it sends
   ``result.json`` and small fetched files back on stdout;
4. the host parses the result with ``parse_result`` and fetches the rest by SFTP;
5. the run directory is removed on every path (see :mod:`~edgekit.targets.ssh_session`).

The target is also a :class:`~edgekit.targets.base.DeviceShell`: ``provision`` and ``doctor``
run commands, put and read files and probe the runtimes through it.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import threading
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from edgekit.errors import RunnerFailedError, UsageError
from edgekit.resources import RUNNER_NAME, runner_path
from edgekit.targets.base import RunJob, RunResult, Target, TargetInfo, parse_result
from edgekit.targets.cache import PIDS_NAME, STATUS_NAME, TransferStats
from edgekit.targets.ssh_commands import RemoteCommands, quote_all
from edgekit.targets.ssh_connection import SSHConnection
from edgekit.targets.ssh_failures import SSHFailures
from edgekit.targets.ssh_options import DEFAULT_SITE_DIR, SSHOptions
from edgekit.targets.ssh_session import SSHSession
from edgekit.targets.ssh_transfer import SSHTransfer
from edgekit.targets.sshconfig import Endpoint

RESULT_NAME = "result.json"
JOB_NAME = "job.json"
RESERVED_NAMES = (JOB_NAME, RUNNER_NAME, RESULT_NAME, PIDS_NAME, STATUS_NAME)


def _check_relative_name(name: str, what: str) -> str:
    """A file name inside the run directory: relative, no ``..``, no NUL."""
    path = PurePosixPath(name)
    if (
        not name
        or "\x00" in name
        or path.is_absolute()
        or any(part == ".." for part in path.parts)
        or str(path) in {".", ""}
    ):
        raise UsageError(f"bad {what} name {name!r}: it must be a relative path inside the run directory")
    return str(path)


class SSHTarget(Target):
    """Runs the runner on a device reached over SSH.

    ``host`` is ``[user@]addr[:port]``, ``[user@][ipv6]:port`` or an alias of the SSH config
    (``~/.ssh/config`` unless ``ssh_config`` says otherwise: HostName, User, Port,
    IdentityFile, IdentitiesOnly, ProxyJump, ServerAliveInterval, ConnectTimeout,
    UserKnownHostsFile are honoured). ``options`` (:class:`SSHOptions`, see there for each
    field) say how to reach and use it; keyword arguments set single fields over them
    (``SSHTarget(host, python="python3", workdir=...)``). ``progress`` (a ``Progress``) shows
    pushes of large files.
    """

    def __init__(self, host: str, options: SSHOptions | None = None, *, progress: Any = None,
                 **fields: Any) -> None:
        given = SSHOptions.coerce(options).merged(SSHOptions.from_mapping(fields))
        resolved = given.resolved()
        self.options = resolved
        self.python: str = resolved.python  # type: ignore[assignment]
        self.python_argv = self._split_python(self.python)
        self.runner = Path(resolved.runner) if resolved.runner is not None else None
        self.progress = progress  # an edgekit.report.progress.Progress: shows pushes of large files
        self._stats = TransferStats()
        self._lock = threading.RLock()  # one operation at a time on the connection
        self.connection = SSHConnection(host, resolved, self._stats)
        self.commands = RemoteCommands(self.connection)
        # the token names this target's unfinished transfers
        self.transfer = SSHTransfer(self.connection, self.commands, self._stats, uuid.uuid4().hex[:12], progress)
        self.session = SSHSession(self.connection, self.commands, self.transfer, self._stats,
                                  workdir=resolved.workdir, site_dir=resolved.site_dir,  # type: ignore[arg-type]
                                  command_timeout=resolved.command_timeout,  # type: ignore[arg-type]
                                  keepalive_s=resolved.keepalive_s,  # type: ignore[arg-type]
                                  reconnect_s=resolved.reconnect_s)  # type: ignore[arg-type]
        self.failures = SSHFailures(self.address, resolved.profile_name, resolved.memory_mib)

    @staticmethod
    def _split_python(python: str) -> list[str]:
        argv = shlex.split(python) if python else []
        if not argv:
            raise UsageError("the device's python command is empty", "pass e.g. --python python3")
        return argv

    # ------------------------------------------------------------------ public API

    @property
    def endpoint(self) -> Endpoint:
        return self.connection.endpoint

    @property
    def address(self) -> str:
        """``user@host:port`` of the device (after SSH config resolution)."""
        return self.connection.address

    @property
    def workdir(self) -> str:
        return self.session.workdir

    @property
    def known_hosts_path(self) -> Path:
        return self.connection.known_hosts_path

    @property
    def is_open(self) -> bool:
        return self.connection.is_open

    @property
    def cache_dir(self) -> str:
        """The device's cache folder (absolute once connected)."""
        return self.session.cache_dir

    def stats(self) -> dict[str, float]:
        """What this target moved so far: connections, bytes pushed, cache hits, ... (cumulative)."""
        return self._stats.to_dict()

    def open(self) -> None:
        """Connect, check the host key and authenticate. Idempotent.

        SFTP starts on first use (a push, a fetch of a large file): a warm run needs none.
        """
        with self._lock:
            self.connection.open()

    def run(self, job: RunJob, local_dir: Path) -> RunResult:
        """Run one job in a fresh run directory; see the module docstring."""
        local_dir = Path(local_dir)
        names = {_check_relative_name(name, "job file"): Path(path) for name, path in job.files.items()}
        for reserved in RESERVED_NAMES:
            if reserved in names:
                raise UsageError(f"a job file may not be called {reserved!r} (the runner protocol uses it)")
        fetch = [_check_relative_name(name, "fetched file") for name in job.fetch]
        for local in names.values():
            if not local.is_file():
                raise UsageError(f"the job file {local} does not exist")
        files = {RUNNER_NAME: self._runner_file(), **names}
        with self._lock:
            before = self._stats.copy()
            run_dir, done = "", None
            try:
                self.connection.ensure_open()
                run_dir = self.session.new_run_dir()
                done = self.session.supervised(run_dir, files, job.job, [], "running the job", self.python_argv,
                                               fetch=fetch)
                result = self.failures.result(done, self._result_bytes(run_dir, done), self.python_argv[0])
                if done.recovered:
                    result.setdefault("notes", []).append(
                        f"the connection to {self.address} dropped during the run; edgekit reconnected "
                        "and collected the finished run's result"
                    )
                fetched = self.transfer.fetch(run_dir, fetch, local_dir, done)
                self._stats.runs += 1
                self._stats.runner_s += done.runner_s or 0.0
            finally:
                if run_dir:
                    self.session.remove_run_dir(run_dir, done)
            moved = self._stats.minus(before)
            return RunResult(result=result, files=fetched, wall_s=done.wall_s,
                             bytes_pushed=moved.bytes_pushed, transfer=moved.to_dict())

    def _result_bytes(self, run_dir: str, done: Any) -> bytes | None:
        """``result.json`` as sent inline, else read from the run directory (None: not written).

        A setup failure is raised first: its run directory may not exist.
        """
        self.failures.raise_for_setup(done, self.python_argv[0])
        raw = done.files.get(RESULT_NAME)
        return raw if raw is not None else self.transfer.read(posixpath.join(run_dir, RESULT_NAME))

    def probe(self, python: str | None = None) -> dict[str, Any]:
        """Run ``runner --probe`` on the device and return its facts (for ``edgekit doctor``).

        ``python`` runs it with another interpreter command than the target's (e.g. one that
        puts a freshly provisioned folder on ``PYTHONPATH``).
        """
        python_argv = self._split_python(python) if python is not None else self.python_argv
        files = {RUNNER_NAME: self._runner_file()}
        with self._lock:
            run_dir, done = "", None
            try:
                self.connection.ensure_open()
                run_dir = self.session.new_run_dir()
                done = self.session.supervised(run_dir, files, None, ["--probe"], "probing the device", python_argv)
                raw = done.files.get(RESULT_NAME)
                if raw is None:
                    raw = self.transfer.read(posixpath.join(run_dir, RESULT_NAME))
                if raw is None:
                    raise self.failures.error(done, "probing the device", python_argv[0])
                try:
                    facts = json.loads(raw)
                except ValueError:
                    raise self.failures.error(done, "probing the device", python_argv[0]) from None
                if not isinstance(facts, dict):
                    raise RunnerFailedError(f"the runner's probe on {self.address} did not write a JSON object")
                if "ok" in facts and not facts.get("ok"):
                    parse_result(json.dumps(facts), self.address)  # raises the typed error
                return facts
            finally:
                if run_dir:
                    self.session.remove_run_dir(run_dir, done)

    # ------------------------------------------------------------------ DeviceShell

    def exec(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run one command on the device (each argument quoted); ``(status, stdout, stderr)``."""
        with self._lock:
            self.connection.ensure_open()
            done = self.commands.exec(quote_all(argv), timeout=timeout or self.options.command_timeout)
        return done.status, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")

    def put_file(self, local: Path, remote: str) -> None:
        """Copy the local file ``local`` to ``remote`` on the device."""
        with self._lock:
            self.transfer.put(local, remote)

    def write_file(self, remote: str, data: bytes) -> None:
        """Write ``data`` to the file ``remote`` on the device (replacing it)."""
        with self._lock:
            self.transfer.write(remote, data)

    def read_file(self, remote: str) -> bytes | None:
        """The bytes of the file ``remote`` on the device; None when it does not exist."""
        with self._lock:
            return self.transfer.read(remote)

    # ------------------------------------------------------------------ the rest

    def clean_cache(self) -> dict[str, Any]:
        """Remove the device's cache (and run directories idle for an hour); say what went.

        Returns ``{"cache_dir", "entries", "bytes", "run_dirs"}``.
        """
        with self._lock:
            return self.session.clean_cache()

    def close(self) -> None:
        """Remove run directories left by failed cleanups, then close SFTP and the connection(s)."""
        with self._lock:
            if self.session.has_pending() and self.is_open:
                self.session.reap_finished(wait=True)
            self.session.remove_leftovers()
            self.connection.close()

    def describe(self) -> TargetInfo:
        not_reproduced: list[str] = []
        if self.endpoint.jumps:
            hops = ", ".join(hop.address for hop in self.endpoint.jumps)
            not_reproduced.append(f"reached through jump host(s) {hops}: transfer times include them")
        return TargetInfo(
            kind="ssh",
            address=self.address,
            reproduced=["the device itself"],
            not_reproduced=not_reproduced,
            representative_latency=True,
        )

    def _runner_file(self) -> Path:
        runner = self.runner or runner_path()
        if not runner.is_file():
            raise RunnerFailedError(
                f"the runner {runner} is missing from this edgekit installation",
                "reinstall edgekit",
            )
        return runner


def from_profile(profile: Any, address: str | None, options: SSHOptions, progress: Any = None) -> SSHTarget:
    """The SSH target for ``address`` with ``profile``'s SSH defaults under ``options`` (the registry's factory)."""
    return SSHTarget(address, SSHOptions.for_profile(profile).merged(options), progress=progress)  # type: ignore[arg-type]


def clean_device(host: str, device: str | None = None, profile_files: Any = (),
                 ssh: SSHOptions | None = None) -> dict[str, Any]:
    """``edgekit device clean``: remove edgekit's cache on ``host`` (and stale run directories).

    ``device`` names a profile for its SSH defaults (user, port, python, work directory) under
    ``ssh``. Returns what :meth:`SSHTarget.clean_cache` returns plus ``address``.
    """
    options = SSHOptions.coerce(ssh)
    if device:
        from edgekit.devices import get as get_profile

        options = SSHOptions.for_profile(get_profile(device, profile_files)).merged(options)
    target = SSHTarget(host, options)
    with target:
        removed = target.clean_cache()
    return {"address": target.address, **removed}


__all__ = ["DEFAULT_SITE_DIR", "SSHOptions", "SSHTarget", "clean_device", "from_profile"]
