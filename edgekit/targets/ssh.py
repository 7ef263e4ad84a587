"""An SSH device as a :class:`~edgekit.targets.base.Target` (paramiko only, no ``ssh`` binary).

One connection per target: ``open()`` connects (through ``ProxyJump`` hosts if configured),
checks the host key before any credential is offered and authenticates; every later push,
command and fetch reuses that transport (SFTP starts on first use). Keep-alives go out every
``keepalive_s`` seconds and the socket gives up on unacknowledged data after three of them
(``TCP_USER_TIMEOUT``), so a dead link is noticed in seconds, not after TCP's ~15 minutes.

``run(job, local_dir)`` (the device side is :mod:`edgekit.targets.cache`):

1. hashes the runner and ``job.files`` on the host (once per file version);
2. starts one *supervisor* on the device (``python -c SUPERVISOR``, its JSON spec on stdin, so
   no path or argument is ever a shell word; the few other commands quote every word with
   ``shlex.quote``). It checks its Python against the runner's floor (3.6), hashes every
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
5. the run directory is removed on every path: by the waiting supervisor when the host says
   ``rm`` (confirmed before the next run and in ``close()``), else by ``rm -rf``; a failed
   removal is retried in ``close()``. When the link drops mid-run, the target reconnects
   (for up to ``reconnect_s``), waits for the runner and keeps its result if it finished.

Secrets never reach a message or a log line: a password or passphrase is only handed to
paramiko, and key files are named by path, agent keys by type and fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import select
import shlex
import socket
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Union

import paramiko

from edgekit.errors import (
    AuthFailedError,
    ConnectionFailedError,
    EdgekitError,
    RemoteDiskFullError,
    RemoteOutOfMemoryError,
    RemoteRuntimeMissingError,
    RunnerFailedError,
    TargetError,
    UsageError,
)
from edgekit.resources import RUNNER_NAME, runner_path
from edgekit.targets.base import RunJob, RunResult, Target, TargetInfo, parse_result
from edgekit.targets.cache import (
    CACHE_DIR_NAME,
    CACHE_MARK,
    CLEANED_MARK,
    END_MARK,
    EXIT_CACHE_BAD,
    EXIT_PYTHON_TOO_OLD,
    MIN_PYTHON,
    PART_SUFFIX,
    PIDS_NAME,
    PYTHON_MARK,
    SETUP_MARK,
    STATUS_MARK,
    STATUS_NAME,
    SUPERVISOR,
    TransferStats,
    file_digest,
    parse_marker_json,
    read_local,
    split_blocks,
    strip_markers,
)
from edgekit.targets.hostkeys import KnownHosts, fingerprint
from edgekit.targets.sshconfig import (
    Endpoint,
    default_identity_files,
    load_ssh_config,
    resolve_endpoint,
)

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "edgekit-run-"
RESULT_NAME = "result.json"
JOB_NAME = "job.json"
DEFAULT_KEEPALIVE_S = 15
DEFAULT_SITE_DIR = "~/.local/lib/edgekit-site"  # where `edgekit provision` installs runtimes
KEEPALIVE_COUNT_MAX = 3  # as OpenSSH's ServerAliveCountMax
DEFAULT_RECONNECT_S = 30.0
STDERR_TAIL_BYTES = 64 * 1024
STDOUT_TAIL_BYTES = 4 << 20  # holds an inline result.json (cache.INLINE_RESULT_MAX) and more
PUSH_CHUNK = 32768
PROGRESS_MIN_BYTES = 4 << 20  # pushes smaller than this show no progress bar
RESERVED_NAMES = (JOB_NAME, RUNNER_NAME, RESULT_NAME, PIDS_NAME, STATUS_NAME)
STALE_RUN_DIR_S = 3600  # `clean_cache` also removes run directories idle this long

Passphrase = Union[str, Callable[[Path], Union[str, None]], None]

_OOM_STDERR = re.compile(
    r"MemoryError|std::bad_alloc|Cannot allocate memory|Failed to allocate memory|out of memory",
    re.IGNORECASE,
)
_DISK_FULL_STDERR = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)
_ENOSPC = {28, 122}  # ENOSPC, EDQUOT


@dataclass
class _Exec:
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
    channel: Any = None  # the supervisor's channel while it waits for "rm" (see _finish_supervisor)

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


class _KeyLocked(Exception):
    """An encrypted key file that could not be opened (the message says why; no secret in it)."""


def _quote_all(parts: list[str]) -> str:
    return " ".join(shlex.quote(p) for p in parts)


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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@dataclass
class _Entry:
    """One file of a run: its name in the run directory and its cache identity."""

    name: str
    local: Path
    digest: str
    size: int


class SSHTarget(Target):
    """Runs the runner on a device reached over SSH.

    ``host`` is ``[user@]addr[:port]``, ``[user@][ipv6]:port`` or an alias of the SSH config
    (``~/.ssh/config`` unless ``ssh_config`` says otherwise: HostName, User, Port,
    IdentityFile, IdentitiesOnly, ProxyJump, ServerAliveInterval, ConnectTimeout,
    UserKnownHostsFile are honoured). Explicit ``user``/``port`` win over the address, which
    wins over the config, which wins over ``default_user``/``default_port`` (a device
    profile's), which win over the local user name and port 22.

    ``python`` is the interpreter command on the device; it may hold arguments
    (``"env PYTHONPATH=/opt/site python3"``): it is split with ``shlex.split`` and every word
    quoted again. ``workdir`` holds the per-run directories and the cache (``~`` is the
    login's home). ``key_filename`` (a path or a list) is tried first, then IdentityFile
    lines, then the ssh-agent (``use_agent``), then ``~/.ssh/id_*`` when no key file was named;
    an encrypted key file is opened with ``passphrase`` (a string, or a callable taking the
    key's path: the CLI's prompt), else skipped. ``password`` is tried last, only when given.
    ``known_hosts`` defaults to ``~/.ssh/known_hosts`` (plus ``/etc/ssh/ssh_known_hosts``);
    ``accept_new_host_key`` records an unknown host's key there, a changed key is always
    refused. ``connect_timeout`` bounds each connection attempt, ``command_timeout`` a run
    (and a silent SFTP operation), ``keepalive_s`` the keep-alive interval, ``reconnect_s``
    how long a run whose link dropped tries to reconnect and collect its result. ``runner``
    overrides the runner file (tests). ``profile_name`` / ``memory_mib`` describe the device
    in out-of-memory messages. ``progress`` (a ``Progress``) shows pushes of large files.
    ``site_dir`` is put first on the runner's ``sys.path`` when it exists on the device: where
    ``edgekit provision`` installs the runtimes (None: never).
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        python: str = "python3",
        workdir: str = "~/.cache/edgekit",
        key_filename: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
        password: str | None = None,
        passphrase: Passphrase = None,
        known_hosts: str | os.PathLike[str] | None = None,
        accept_new_host_key: bool = False,
        connect_timeout: float = 10,
        command_timeout: float = 600,
        ssh_config: str | os.PathLike[str] | None = None,
        profile_name: str | None = None,
        memory_mib: int | None = None,
        runner: str | os.PathLike[str] | None = None,
        use_agent: bool = True,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        reconnect_s: float = DEFAULT_RECONNECT_S,
        default_user: str | None = None,
        default_port: int | None = None,
        progress: Any = None,
        site_dir: str | None = DEFAULT_SITE_DIR,
    ) -> None:
        if isinstance(key_filename, (str, os.PathLike)):
            key_files = [Path(os.path.expanduser(str(key_filename)))]
        else:
            key_files = [Path(os.path.expanduser(str(k))) for k in (key_filename or [])]
        self._config = load_ssh_config(ssh_config)
        self.endpoint: Endpoint = resolve_endpoint(
            host,
            self._config,
            user=user,
            port=port,
            key_filenames=key_files,
            default_user=default_user,
            default_port=default_port,
        )
        self.python_argv = shlex.split(python) if python else []
        if not self.python_argv:
            raise UsageError("the device's python command is empty", "pass e.g. --python python3")
        self.python = python
        self.site_dir = site_dir  # where `edgekit provision` installs runtimes; used when it exists
        self.workdir = workdir
        for name, value in (("connect timeout", connect_timeout), ("command timeout", command_timeout)):
            if not float(value) > 0:
                raise UsageError(f"the {name} must be a positive number of seconds, not {value!r}")
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout)
        self.accept_new_host_key = accept_new_host_key
        self.profile_name = profile_name
        self.memory_mib = memory_mib
        self.runner = Path(runner) if runner is not None else None
        self.use_agent = use_agent
        self.keepalive_s = keepalive_s
        self.reconnect_s = float(reconnect_s)
        self.progress = progress  # an edgekit.report.progress.Progress: shows pushes of large files
        self._password = password  # never logged, never put in a message
        self._passphrase = passphrase  # idem
        self._keys: dict[Path, paramiko.PKey] = {}  # decrypted key files, for reconnects
        self._known_hosts_arg = known_hosts
        self._known_hosts: dict[Path, KnownHosts] = {}
        self._transport: paramiko.Transport | None = None
        self._hops: list[paramiko.Transport] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._verified: set[str] = set()  # cache entries the device hashed for this target
        self._pending: list[tuple[Any, str]] = []  # (channel, run dir): supervisors told to clean up
        self._leftovers: list[str] = []  # run dirs whose removal failed; retried in close()
        self._started: set[str] = set()  # run dirs a supervisor was started for (may exist)
        self._token = uuid.uuid4().hex[:12]  # names this target's unfinished transfers
        self._stats = TransferStats()
        self._lock = threading.RLock()  # one operation at a time on the connection

    # ------------------------------------------------------------------ public API

    @property
    def address(self) -> str:
        """``user@host:port`` of the device (after SSH config resolution)."""
        return self.endpoint.address

    @property
    def known_hosts_path(self) -> Path:
        return self._known_hosts_for(self.endpoint).path

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    @property
    def sftp(self) -> paramiko.SFTPClient | None:
        """The connection's SFTP session, started on first use (None until ``open()``)."""
        return self._sftp_client() if self.is_open else None

    @property
    def cache_dir(self) -> str:
        """The device's cache folder (absolute once connected)."""
        return posixpath.join(self._remote_workdir(), CACHE_DIR_NAME)

    def stats(self) -> dict[str, float]:
        """What this target moved so far: connections, bytes pushed, cache hits, ... (cumulative)."""
        return self._stats.to_dict()

    def open(self) -> None:
        """Connect, check the host key and authenticate. Idempotent.

        SFTP starts on first use (a push, a fetch of a large file): a warm run needs none.
        """
        with self._lock:
            if self.is_open:
                return
            self._close_connection()
            hops: list[paramiko.Transport] = []
            try:
                sock: Any = None
                previous: Endpoint | None = None
                for endpoint in [*self.endpoint.jumps, self.endpoint]:
                    if previous is not None:
                        sock = self._open_forward(hops[-1], previous, endpoint)
                    hops.append(self._connect_endpoint(endpoint, sock))
                    previous = endpoint
            except BaseException:
                for transport in reversed(hops):
                    transport.close()
                self._sftp = None
                raise
            self._transport = hops[-1]
            self._hops = hops[:-1]
            if self._stats.connections:
                self._stats.reconnects += 1
            self._stats.connections += 1
            log.debug("connected to %s", self.address)

    def _sftp_client(self) -> paramiko.SFTPClient:
        """The connection's SFTP session, started on first use (and the home directory with it)."""
        self._ensure_open()
        if self._sftp is None:
            assert self._transport is not None
            try:
                sftp = self._transport.open_sftp_client()
                sftp.get_channel().settimeout(self.command_timeout)
                home = sftp.normalize(".")
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not self._still_connected():
                    raise ConnectionFailedError(f"lost the connection to {self.address} while starting SFTP: "
                                                f"{str(exc) or type(exc).__name__}") from None
                raise ConnectionFailedError(
                    f"{self.address} accepted the login but its SFTP subsystem did not start: {exc}",
                    "enable SFTP on the device (`Subsystem sftp internal-sftp` in sshd_config)",
                ) from None
            self._sftp = sftp
            self._home = self._home or home
        return self._sftp

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
                self._ensure_open()
                run_dir = self._new_run_dir()
                done = self._supervised(run_dir, files, job.job, [], "running the job", fetch=fetch)
                result = self._read_result(run_dir, done)
                if done.recovered:
                    result.setdefault("notes", []).append(
                        f"the connection to {self.address} dropped during the run; edgekit reconnected "
                        "and collected the finished run's result"
                    )
                fetched = self._fetch(run_dir, fetch, local_dir, done)
                self._stats.runs += 1
                self._stats.runner_s += done.runner_s or 0.0
            finally:
                if run_dir:
                    self._remove_run_dir(run_dir, done)
            moved = self._stats.minus(before)
            return RunResult(result=result, files=fetched, wall_s=done.wall_s,
                             bytes_pushed=moved.bytes_pushed, transfer=moved.to_dict())

    def probe(self) -> dict[str, Any]:
        """Run ``runner --probe`` on the device and return its facts (for ``edgekit doctor``)."""
        files = {RUNNER_NAME: self._runner_file()}
        with self._lock:
            run_dir, done = "", None
            try:
                self._ensure_open()
                run_dir = self._new_run_dir()
                done = self._supervised(run_dir, files, None, ["--probe"], "probing the device")
                raw = done.files.get(RESULT_NAME)
                if raw is None:
                    raw = self._read_remote(posixpath.join(run_dir, RESULT_NAME))
                if raw is None:
                    raise self._failure_error(done, "probing the device")
                try:
                    facts = json.loads(raw)
                except ValueError:
                    raise self._failure_error(done, "probing the device") from None
                if not isinstance(facts, dict):
                    raise RunnerFailedError(f"the runner's probe on {self.address} did not write a JSON object")
                if "ok" in facts and not facts.get("ok"):
                    parse_result(json.dumps(facts), self.address)  # raises the typed error
                return facts
            finally:
                if run_dir:
                    self._remove_run_dir(run_dir, done)

    def exec(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run one command on the device (each argument quoted); ``(status, stdout, stderr)``."""
        with self._lock:
            self._ensure_open()
            done = self._exec(_quote_all(argv), timeout=timeout or self.command_timeout)
        return done.status, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")

    def clean_cache(self) -> dict[str, Any]:
        """Remove the device's cache (and run directories idle for an hour); say what went.

        Returns ``{"cache_dir", "entries", "bytes", "run_dirs"}``.
        """
        with self._lock:
            self._ensure_open()
            self._reap_finished(wait=True)
            sftp = self._sftp_client()  # also learns the home directory: the paths are absolute
            cache_dir = self.cache_dir
            entries, size = 0, 0
            with self._guard("listing the cache"):
                try:
                    for attrs in sftp.listdir_attr(cache_dir):
                        entries += 1
                        size += attrs.st_size or 0
                except FileNotFoundError:
                    pass
            stale: list[str] = []
            with self._guard("listing the work directory"):
                try:
                    now = time.time()
                    for attrs in sftp.listdir_attr(self._remote_workdir()):
                        if (attrs.filename.startswith(RUN_DIR_PREFIX)
                                and now - (attrs.st_mtime or now) > STALE_RUN_DIR_S):
                            stale.append(posixpath.join(self._remote_workdir(), attrs.filename))
                except FileNotFoundError:
                    pass
            done = self._exec(_quote_all(["rm", "-rf", "--", cache_dir, *stale]), timeout=self.command_timeout)
            if done.status != 0:
                raise TargetError(f"could not remove {cache_dir!r} on {self.address}: {done.stderr_tail(3)}")
            self._verified.clear()
            return {"cache_dir": cache_dir, "entries": entries, "bytes": size, "run_dirs": len(stale)}

    def close(self) -> None:
        """Remove run directories left by failed cleanups, then close SFTP and the connection(s)."""
        with self._lock:
            if self._pending and self.is_open:
                self._reap_finished(wait=True)
            if self._leftovers:
                try:
                    self._ensure_open()
                except EdgekitError as exc:
                    log.warning("could not reconnect to %s to remove %s: %s", self.address,
                                ", ".join(self._leftovers), exc)
                for run_dir in list(self._leftovers):
                    self._leftovers.remove(run_dir)
                    if self.is_open:
                        self._remove_run_dir(run_dir)
            self._close_connection()

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

    # ------------------------------------------------------------------ connection

    def _known_hosts_for(self, endpoint: Endpoint) -> KnownHosts:
        path = self._known_hosts_arg or endpoint.known_hosts
        use_system = self._known_hosts_arg is None
        resolved = Path(os.path.expanduser(str(path))) if path else Path.home() / ".ssh" / "known_hosts"
        if resolved not in self._known_hosts:
            self._known_hosts[resolved] = KnownHosts(resolved, use_system=use_system)
        return self._known_hosts[resolved]

    def _timeout_for(self, endpoint: Endpoint) -> float:
        return endpoint.connect_timeout or self.connect_timeout

    def _open_socket(self, endpoint: Endpoint) -> socket.socket:
        timeout = self._timeout_for(endpoint)
        where = endpoint.host_port
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        except socket.gaierror as exc:
            raise ConnectionFailedError(
                f"cannot resolve the host name {endpoint.host!r} (for {where}): {exc.strerror or exc}",
                "check the address (or the HostName of this alias in your SSH config) and your DNS",
            ) from None
        except ConnectionRefusedError:
            raise ConnectionFailedError(
                f"connection to {where} refused: nothing accepts SSH connections on port "
                f"{endpoint.port} there",
                "check that sshd runs on the device and that the port is right",
            ) from None
        except (socket.timeout, TimeoutError):
            raise ConnectionFailedError(
                f"connection to {where} timed out after {timeout:g} s",
                "check that the device is on and reachable from here (address, network, firewall), "
                "or raise --connect-timeout",
            ) from None
        except OSError as exc:
            raise ConnectionFailedError(
                f"cannot connect to {where}: {exc.strerror or exc}",
                "check the address and that the device is on this network",
            ) from None
        # SSH requests and replies are small: no Nagle delay (a 40 ms stall per SFTP round trip)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # A dead link shows as data that is never acknowledged (keep-alives are data): give up
        # after KEEPALIVE_COUNT_MAX keep-alive intervals, as ServerAliveCountMax would.
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            keepalive = endpoint.keepalive_s or self.keepalive_s
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                int(max(keepalive, 0.2) * KEEPALIVE_COUNT_MAX * 1000))
            except OSError:
                pass
        return sock

    def _open_forward(self, via: paramiko.Transport, jump: Endpoint, endpoint: Endpoint) -> paramiko.Channel:
        """A ``direct-tcpip`` channel from the jump host ``jump`` to ``endpoint``."""
        timeout = self._timeout_for(endpoint)
        try:
            return via.open_channel(
                "direct-tcpip", (endpoint.host, endpoint.port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            hint = "check the address as seen from the jump host, and that sshd runs on the device"
            if exc.code == 1:
                hint = "the jump host forbids forwarding: set AllowTcpForwarding yes in its sshd_config"
            raise ConnectionFailedError(
                f"the jump host {jump.address} could not connect to {endpoint.host_port}: {exc.text}",
                hint,
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionFailedError(
                f"the jump host {jump.address} did not open a connection to {endpoint.host_port}: {exc}"
            ) from None

    def _connect_endpoint(self, endpoint: Endpoint, sock: Any) -> paramiko.Transport:
        """Handshake, host key check and authentication for one hop."""
        timeout = self._timeout_for(endpoint)
        if sock is None:
            sock = self._open_socket(endpoint)
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            known_hosts = self._known_hosts_for(endpoint)
            options = transport.get_security_options()
            options.key_types = known_hosts.preferred_algorithms(
                endpoint.host, endpoint.port, list(options.key_types)
            )
            try:
                transport.start_client(timeout=timeout)
                # start_client returns quietly when its timeout passes mid-negotiation
                if not (transport.is_active() and transport.initial_kex_done):
                    raise socket.timeout("the key exchange did not finish")
            except (paramiko.SSHException, EOFError, OSError) as exc:
                text = str(exc)
                if "banner" in text.lower() or isinstance(exc, (socket.timeout, TimeoutError)):
                    message = (
                        f"connection to {endpoint.host_port} timed out: no SSH greeting within "
                        f"{timeout:g} s ({text})"
                    )
                else:
                    message = f"the SSH handshake with {endpoint.host_port} failed: {text or type(exc).__name__}"
                raise ConnectionFailedError(message, "check that this address and port are the device's sshd") from None
            key = transport.get_remote_server_key()
            known_hosts.check(
                endpoint.host,
                endpoint.port,
                key,
                accept_new=self.accept_new_host_key,
                what=endpoint.address,
            )
            self._authenticate(transport, endpoint, is_target=endpoint is self.endpoint)
            transport.set_keepalive(endpoint.keepalive_s or self.keepalive_s)
            return transport
        except BaseException:
            transport.close()
            raise

    def _authenticate(self, transport: paramiko.Transport, endpoint: Endpoint, *, is_target: bool) -> None:
        tried: list[str] = []
        skipped: list[str] = []
        user = endpoint.user
        publickey_allowed = True

        def attempt(label: str, do: Any) -> bool:
            nonlocal publickey_allowed
            try:
                remaining = do()
            except paramiko.BadAuthenticationType as exc:
                tried.append(f"{label} (the server accepts only: {', '.join(exc.allowed_types) or 'nothing'})")
                if "publickey" not in exc.allowed_types:
                    publickey_allowed = False
                return False
            except paramiko.AuthenticationException:
                tried.append(label)
                return False
            if remaining:
                raise AuthFailedError(
                    f"{endpoint.address} wants a second authentication step "
                    f"({', '.join(remaining)}) after {label}, which edgekit cannot answer",
                    "allow key-only login for this user on the device",
                )
            return transport.is_authenticated()

        def guarded(label: str, do: Any) -> bool:
            if not transport.is_active():
                return False
            try:
                return attempt(label, do)
            except (paramiko.SSHException, EOFError, OSError):
                skipped.append("the server closed the connection (too many attempts? see MaxAuthTries)")
                return False

        seen_keys: set[bytes] = set()

        def try_key_files(paths: list[Path], explicit: bool) -> bool:
            for path in paths:
                if not publickey_allowed:
                    return False
                if not path.exists():
                    if explicit:
                        skipped.append(f"key file {path} (does not exist)")
                    continue
                try:
                    key = self._load_key(path)
                except _KeyLocked as exc:
                    skipped.append(f"key file {path} ({exc})")
                    continue
                except OSError as exc:
                    skipped.append(f"key file {path} (cannot read it: {exc.strerror})")
                    continue
                except Exception:  # never show the exception: some carry the key bytes
                    skipped.append(f"key file {path} (not a private key edgekit can use)")
                    continue
                if key.asbytes() in seen_keys:
                    continue
                seen_keys.add(key.asbytes())
                if guarded(f"key file {path}", lambda key=key: transport.auth_publickey(user, key)):
                    return True
            return False

        if try_key_files(endpoint.identity_files, explicit=True):
            return
        if self.use_agent and not endpoint.identities_only and publickey_allowed:
            agent = None
            try:
                agent = paramiko.Agent()
                agent_keys = list(agent.get_keys())
            except (paramiko.SSHException, OSError):
                agent_keys = []
                skipped.append("ssh-agent (could not talk to it)")
            try:
                for key in agent_keys:
                    if not publickey_allowed or key.asbytes() in seen_keys:
                        continue
                    seen_keys.add(key.asbytes())
                    label = f"ssh-agent key {key.get_name()} {fingerprint(key)}"
                    if guarded(label, lambda key=key: transport.auth_publickey(user, key)):
                        return
            finally:
                if agent is not None:
                    agent.close()
        if not endpoint.identity_files and try_key_files(default_identity_files(), explicit=False):
            return
        if is_target and self._password is not None:
            if guarded("password", lambda: transport.auth_password(user, self._password)):
                return

        if not tried:
            message = f"edgekit had no credential to offer {endpoint.address}"
            hint = (
                "no usable SSH key was found (no ssh-agent key, no ~/.ssh/id_ed25519, id_ecdsa or id_rsa): "
                "create one with `ssh-keygen -t ed25519`, install it with `ssh-copy-id`, or pass --identity PATH"
            )
        else:
            message = f"{endpoint.address} refused every credential edgekit offered"
            hint = (
                f"add your public key to ~{user}/.ssh/authorized_keys on the device, or pass --identity PATH"
            )
        details = "; ".join(tried + skipped)
        if details:
            hint += f". Tried: {details}"
        raise AuthFailedError(message, hint)

    def _load_key(self, path: Path) -> paramiko.PKey:
        """A key file as a PKey; an encrypted one is opened with the passphrase (asked once)."""
        if path in self._keys:
            return self._keys[path]
        try:
            key = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "no password"
            passphrase = self._passphrase(path) if callable(self._passphrase) else self._passphrase
            if not passphrase:
                raise _KeyLocked("encrypted: add it to ssh-agent, or run edgekit where it can ask for "
                                 "the passphrase") from None
            try:
                key = paramiko.PKey.from_path(path, passphrase.encode("utf-8"))
            except (ValueError, TypeError, paramiko.SSHException):
                raise _KeyLocked("encrypted, and the passphrase did not open it") from None
        self._keys[path] = key
        return key

    def _ensure_open(self) -> None:
        if not self.is_open:
            if self._transport is not None:
                log.info("the connection to %s was lost; reconnecting", self.address)
            self.open()

    def _close_connection(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # closing a dead session must not raise
                pass
        for transport in [self._transport, *reversed(self._hops)]:
            if transport is not None:
                transport.close()
        self._sftp = None
        self._transport = None
        self._hops = []
        for _channel, run_dir in self._pending:  # not confirmed: remove them again later
            if run_dir not in self._leftovers:
                self._leftovers.append(run_dir)
        self._pending = []

    def _still_connected(self, grace_s: float = 0.25) -> bool:
        """After an error: is the connection still up? (paramiko's reader thread may need a moment
        to notice a dead socket, so a lost link can surface first as a failed channel operation.)"""
        deadline = time.monotonic() + grace_s
        while self.is_open:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.02)
        return False

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn a dropped connection into ConnectionFailedError, SFTP errors into TargetError."""
        try:
            yield
        except EdgekitError:
            raise
        except (socket.timeout, TimeoutError):
            raise ConnectionFailedError(
                f"{self.address} stopped answering while {doing} (no reply within "
                f"{self.command_timeout:g} s)",
                "check the device and the network, then retry (or raise --command-timeout)",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, EOFError) or not self._still_connected():
                raise ConnectionFailedError(
                    f"lost the connection to {self.address} while {doing}: {str(exc) or type(exc).__name__}",
                    "check the device and the network, then retry",
                ) from None
            raise TargetError(f"{doing} on {self.address} failed: {str(exc) or type(exc).__name__}") from None

    # ------------------------------------------------------------------ remote files

    def _runner_file(self) -> Path:
        runner = self.runner or runner_path()
        if not runner.is_file():
            raise RunnerFailedError(
                f"the runner {runner} is missing from this edgekit installation",
                "reinstall edgekit",
            )
        return runner

    def _python_command(self) -> list[str]:
        """The python argv with a leading ``~/`` resolved (the words are quoted later): under the
        home directory, or relative to the login directory (which is home) while it is unknown."""
        first, rest = self.python_argv[0], self.python_argv[1:]
        if first.startswith("~/"):
            first = (self._home + first[1:]) if self._home else "." + first[1:]
        return [first, *rest]

    def _remote_workdir(self) -> str:
        """The work directory: absolute once the home directory is known, else relative to the
        login directory (commands and SFTP both start there)."""
        home = self._home or "."
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

    # ------------------------------------------------------------------ the cache

    def _entries(self, files: dict[str, Path]) -> list[_Entry]:
        entries = []
        for name, local in files.items():
            try:
                digest, size = file_digest(local)
            except OSError as exc:
                raise UsageError(f"cannot read the job file {local}: {exc.strerror or exc}") from None
            entries.append(_Entry(name, Path(local), digest, size))
        return entries

    def _push_file(self, cache_dir: str, entry: _Entry, resume_from: str | None, offset: int, needed: int) -> str:
        """Send ``entry`` to ``<cache>/<sha256>.part-<token>``, from ``offset`` of the unfinished
        transfer ``resume_from`` (taken over by renaming it); the part's path.

        Each writer has its own part (two deploys to one device may push the same file at the
        same time); the device hashes a part before it becomes the cache entry.
        """
        sftp = self._sftp_client()
        part = posixpath.join(cache_dir, entry.digest + PART_SUFFIX + self._token)
        if resume_from is not None and posixpath.join(cache_dir, resume_from) != part:
            try:
                sftp.posix_rename(posixpath.join(cache_dir, resume_from), part)
            except (OSError, paramiko.SSHException):  # taken by another writer meanwhile: start over
                offset = 0
        sent = 0
        show = getattr(self.progress, "task", None) if entry.size - offset >= PROGRESS_MIN_BYTES else None
        try:
            with self._guard(f"pushing {entry.name!r}"), \
                    (show(f"pushing {entry.name}", total=entry.size, unit="B") if show else nullcontext()) as task:
                with sftp.open(part, "ab" if offset else "wb") as remote:
                    remote.set_pipelined(True)
                    for block in read_local(entry.local, offset, PUSH_CHUNK):
                        remote.write(block)
                        sent += len(block)
                        self._stats.bytes_pushed += len(block)
                        if task is not None:
                            task.update(offset + sent)
                # paramiko drops the replies to pipelined writes (a full disk among them): check
                # the size that arrived, the device checks the sha256 before the file is used
                arrived = sftp.stat(part).st_size
                if arrived != entry.size:
                    raise OSError(f"{arrived} of {entry.size} bytes arrived")
        except ConnectionFailedError as exc:
            done = offset + sent
            raise ConnectionFailedError(
                f"{exc.message} ({_mib(done)} of {_mib(entry.size)} sent)",
                "check the device and the network, then run again: what was sent stays in the device's "
                "cache and the transfer resumes from there",
            ) from None
        except TargetError as exc:
            self._remove_quietly(part)
            free_kib = self._free_kib(cache_dir)
            if free_kib is not None and free_kib * 1024 < needed + (1 << 20):
                raise RemoteDiskFullError(
                    f"the device's disk is full: {free_kib // 1024} MiB free under {self._remote_workdir()!r} "
                    f"on {self.address}, the run needs {needed / (1 << 20):.1f} MiB",
                    DISK_FULL_HINT,
                ) from None
            raise TargetError(f"could not push {entry.name!r} to {self.address}: {exc}") from None
        self._stats.files_pushed += 1
        self._stats.bytes_resumed += offset
        return posixpath.basename(part)

    def _remove_quietly(self, path: str) -> None:
        try:
            self._sftp_client().remove(path)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def _free_kib(self, path: str) -> int | None:
        try:
            done = self._exec(_quote_all(["df", "-Pk", "--", path]), timeout=30)
        except EdgekitError:
            return None
        lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            return int(lines[-1].split()[3])
        except (IndexError, ValueError):
            return None

    # ------------------------------------------------------------------ the supervisor

    def _supervisor_command(self) -> str:
        return _quote_all([*self._python_command(), "-c", SUPERVISOR])

    def _new_run_dir(self) -> str:
        """A fresh run directory's path (the supervisor creates it)."""
        return posixpath.join(self._remote_workdir(), RUN_DIR_PREFIX + uuid.uuid4().hex)

    def _supervised(self, run_dir: str, files: dict[str, Path], job: dict[str, Any] | None,
                    args: list[str], doing: str, fetch: list[str] | None = None) -> _Exec:
        """Run the runner under the supervisor in ``run_dir``, pushing what its cache lacks.

        The first attempt pushes nothing: the supervisor hashes every file this target has not
        verified yet and reports the missing and corrupt ones (and any unfinished transfer of
        them), having checked its Python first, so no byte moves to a device that cannot run
        the runner. Those are pushed (resumed where possible) and the run is tried again; a file
        that arrives corrupted is sent again, twice at most.
        """
        entries = self._entries(files)
        unique = {e.digest: e for e in entries}
        self._ensure_open()
        self._reap_finished(wait=False)
        deadline = time.monotonic() + self.command_timeout
        pushed: dict[str, str] = {}  # digest -> its part, pushed for this run
        done: _Exec | None = None
        for attempt in range(4):
            verify = [[d, pushed.get(d)] for d in unique if d not in self._verified]
            spec = {
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
            done = self._exec_supervisor(spec, run_dir, deadline, doing)
            self._verified.update(d for d in done.verified if d in unique)
            if done.status != EXIT_CACHE_BAD or not done.cache_bad:
                break
            for digest in done.verified:
                pushed.pop(digest, None)  # stored in the cache now
            for digest, why in done.cache_bad.items():
                self._verified.discard(digest)
                pushed.pop(digest, None)
                if why == "corrupt":
                    self._stats.corrupt_entries += 1
                    log.warning("a file in the cache of %s (sha256 %s) did not match its digest; "
                                "pushing it again", self.address, digest[:12])
            if attempt == 3:
                raise TargetError(
                    f"the files pushed to {self.address} kept arriving corrupted "
                    f"(sha256 mismatch: {', '.join(d[:12] for d in done.cache_bad)})",
                    "check the device's storage (e.g. its SD card) and the network",
                )
            missing = [unique[d] for d in done.cache_bad if d in unique]
            resume = {e.digest: self._resumable(done.cache_parts, e) for e in missing}
            needed = sum(e.size - resume[e.digest][1] for e in missing)
            cache_dir = done.cache_dir or self.cache_dir
            for entry in missing:
                pushed[entry.digest] = self._push_file(cache_dir, entry, *resume[entry.digest], needed)
        assert done is not None
        for entry in entries:
            if entry.digest not in pushed:
                self._stats.files_cached += 1
                self._stats.bytes_cached += entry.size
        return done

    @staticmethod
    def _resumable(parts: dict[str, Any], entry: _Entry) -> tuple[str | None, int]:
        """The unfinished transfer of ``entry`` the device reported: ``(name, size)`` or ``(None, 0)``."""
        found = parts.get(entry.digest)
        if (isinstance(found, list) and len(found) == 2 and isinstance(found[0], str)
                and found[0].startswith(entry.digest + PART_SUFFIX) and "/" not in found[0]
                and isinstance(found[1], int) and 0 < found[1] < entry.size):
            return found[0], found[1]
        return None, 0

    def _exec_supervisor(self, spec: dict[str, Any], run_dir: str, deadline: float, doing: str) -> _Exec:
        remaining = max(deadline - time.monotonic(), 1.0)
        self._started.add(run_dir)
        try:
            done = self._exec(self._supervisor_command(), timeout=remaining, run_dir=run_dir,
                              stdin=json.dumps(spec).encode("utf-8") + b"\n", limit_s=self.command_timeout,
                              keep_open=True)
        except ConnectionFailedError as exc:
            if self.is_open:  # the command timeout: the connection is fine, the run was stopped
                raise
            done = self._recover(run_dir, deadline, exc, doing)
        if done.home and not self._home:
            self._home = done.home
        return done

    def _recover(self, run_dir: str, deadline: float, error: ConnectionFailedError, doing: str) -> _Exec:
        """The link dropped while the supervisor ran: reconnect, wait for it, read its status."""
        log.warning("lost the connection to %s while %s; reconnecting", self.address, doing)
        give_up = time.monotonic() + self.reconnect_s
        while True:
            try:
                self.open()
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
        waited = self._exec(_quote_all(["/bin/sh", "-c", script, "edgekit", run_dir]),
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
        done = _Exec(status=int(info.get("rc", -1)), stdout=b"", stderr=b"", wall_s=0.0, recovered=True)
        _apply_status(done, info)
        return done

    # ------------------------------------------------------------------ results

    def _read_remote(self, path: str) -> bytes | None:
        sftp = self._sftp_client()
        with self._guard(f"reading {posixpath.basename(path)}"):
            try:
                with sftp.open(path, "r") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None

    def _fetch(self, run_dir: str, names: list[str], local_dir: Path, done: _Exec) -> dict[str, Path]:
        """Bring back ``names``: from the supervisor's stdout when it sent them, else by SFTP."""
        files: dict[str, Path] = {}
        for name in names:
            local = local_dir / name
            local.parent.mkdir(parents=True, exist_ok=True)
            if name in done.file_sizes and done.file_sizes[name] is None:
                raise RunnerFailedError(
                    f"the runner on {self.address} reported success but did not write {name!r}",
                    RUNNER_HINT_MISMATCH,
                )
            if name in done.files:
                tmp = local.with_name(f".{local.name}.part")
                tmp.write_bytes(done.files[name])
                os.replace(tmp, local)
            else:
                sftp = self._sftp_client()
                with self._guard(f"fetching {name}"):
                    try:
                        sftp.get(posixpath.join(run_dir, name), str(local))
                    except FileNotFoundError:
                        raise RunnerFailedError(
                            f"the runner on {self.address} reported success but did not write {name!r}",
                            RUNNER_HINT_MISMATCH,
                        ) from None
            self._stats.bytes_fetched += local.stat().st_size
            files[name] = local
        return files

    def _remove_run_dir(self, run_dir: str, done: _Exec | None = None) -> None:
        """Remove the run directory: by its supervisor when it still waits (no extra command),
        else ``rm -rf``. Never raises (a failure is retried in ``close()``)."""
        if not run_dir or RUN_DIR_PREFIX not in posixpath.basename(run_dir) or run_dir not in self._started:
            return  # never created: the run failed before its supervisor started
        if done is not None and done.channel is not None and self._finish_supervisor(done, run_dir):
            return
        try:
            self._ensure_open()
            done = self._exec(_quote_all(["rm", "-rf", "--", run_dir]), timeout=60)
            if done.status != 0:
                raise TargetError(done.stderr_tail(3))
            self._started.discard(run_dir)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
            log.warning("could not remove %s on %s: %s", run_dir, self.address, exc)
            if run_dir not in self._leftovers:
                self._leftovers.append(run_dir)

    # ------------------------------------------------------------------ commands

    def _exec(self, command: str, *, timeout: float, run_dir: str | None = None,
              stdin: bytes | None = None, limit_s: float | None = None, keep_open: bool = False) -> _Exec:
        """Run ``command`` through the login shell, feed ``stdin``, read stdout/stderr until it exits.

        ``keep_open`` (the supervisor): stop reading once its status line has arrived and leave
        the channel open in ``done.channel`` (see :meth:`_finish_supervisor`).
        """
        assert self._transport is not None
        transport = self._transport
        out, err = _Tail(STDOUT_TAIL_BYTES), _Tail(STDERR_TAIL_BYTES)
        started = time.monotonic()
        deadline = started + timeout
        status: int | None = None
        with self._guard("starting a command"):
            channel = transport.open_session(timeout=self._timeout_for(self.endpoint))
        try:
            with self._guard("running a command"):
                channel.settimeout(timeout)
                channel.exec_command(command)
                try:
                    if stdin is not None:
                        channel.sendall(stdin)
                    if not keep_open:
                        channel.shutdown_write()
                except OSError:
                    if not transport.is_active():
                        raise
                    # the command ended before reading its input (e.g. python not found): its
                    # exit status and output say why
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
                        self._kill_run(run_dir)
                        raise ConnectionFailedError(
                            f"the command on {self.address} did not finish within {limit_s or timeout:g} s "
                            "(the command timeout); it was stopped",
                            "run fewer or shorter inferences (--runs, --min-seconds), or raise "
                            "--command-timeout",
                        )
                    # wakes at once when output arrives or the channel closes (its fileno is a pipe
                    # paramiko signals), else polls the exit status and the deadline
                    select.select([channel], [], [], pause)
                    pause = min(pause * 2, 0.05)
                if channel.exit_status_ready():
                    status = channel.recv_exit_status()
                    if status == -1 and not transport.is_active():  # closed with the connection, no status
                        raise EOFError("the connection closed")
        except BaseException:
            channel.close()
            raise
        stdout, inline, info = split_blocks(out.value())
        done = _Exec(status=-1 if status is None else status, stdout=stdout, stderr=err.value(),
                     wall_s=time.monotonic() - started, files=inline)
        if info is not None:
            _apply_status(done, info)
            if status is None:
                done.status = int(info.get("rc", -1))
        if status is None and info is not None:
            done.channel = channel
        else:
            channel.close()
        _parse_markers(done)
        return done

    def _finish_supervisor(self, done: _Exec, run_dir: str) -> bool:
        """Tell the supervisor still waiting on ``done.channel`` to remove its run directory.

        No round trip: the answer is collected by :meth:`_reap_finished` (before the next run,
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

    def _reap_finished(self, wait: bool) -> None:
        """Confirm the clean-ups handed to supervisors; ``rm -rf`` what one did not remove."""
        waiting: list[tuple[Any, str]] = []
        for channel, run_dir in self._pending:
            if not channel.exit_status_ready() and not wait and self.is_open:
                waiting.append((channel, run_dir))
                continue
            deadline = time.monotonic() + 30
            while not channel.exit_status_ready() and self.is_open and time.monotonic() < deadline:
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
                self._remove_run_dir(run_dir)
        self._pending = waiting

    def _kill_run(self, run_dir: str | None) -> None:
        """Kill the supervisor and the runner of a run that timed out (best effort)."""
        if not run_dir:
            return
        pids = shlex.quote(posixpath.join(run_dir, PIDS_NAME))
        try:
            assert self._transport is not None
            channel = self._transport.open_session(timeout=self._timeout_for(self.endpoint))
            try:
                channel.settimeout(30)
                channel.exec_command(f"kill -9 $(cat -- {pids} 2>/dev/null) 2>/dev/null; true")
                channel.recv_exit_status()
            finally:
                channel.close()
        except Exception as exc:  # noqa: BLE001 - best effort
            log.warning("could not stop the timed-out runner on %s: %s", self.address, exc)

    # ------------------------------------------------------------------ errors

    def _read_result(self, run_dir: str, done: _Exec) -> dict[str, Any]:
        self._raise_for_setup(done)
        raw = done.files.get(RESULT_NAME)
        if raw is None:
            raw = self._read_remote(posixpath.join(run_dir, RESULT_NAME))
        signal_death = done.status in (-1, 137) or done.status > 128
        if raw is None:
            raise self._failure_error(done, "running the job")
        try:
            return parse_result(raw, self.address)
        except RunnerFailedError as exc:
            if exc.kind is None and signal_death:  # a truncated result.json of a killed runner
                raise self._failure_error(done, "running the job") from None
            if exc.kind == "out_of_memory":
                raise RemoteOutOfMemoryError(
                    f"the model ran out of memory on the device {self.address}: {self._memory_text(done, raw)} "
                    f"({exc.message})",
                    OOM_HINT,
                ) from None
            if _DISK_FULL_STDERR.search(exc.message):
                raise RemoteDiskFullError(
                    f"the device {self.address} ran out of disk space ({exc.message})", DISK_FULL_HINT
                ) from None
            raise

    def _raise_for_setup(self, done: _Exec) -> None:
        """Errors of the supervisor itself (its Python, the run directory)."""
        if done.status == EXIT_PYTHON_TOO_OLD or done.status in (126, 127):
            raise self._failure_error(done, "starting the runner")
        if done.setup_error is not None:
            raise self._failure_error(done, "preparing the run")

    def _memory_text(self, done: _Exec, raw: bytes | None = None) -> str:
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

    def _failure_error(self, done: _Exec, doing: str) -> TargetError:
        """The typed error for a supervisor or runner that exited without a (readable) result."""
        where = self.address
        tail = done.stderr_tail()
        shown_tail = f"; its last output:\n{tail}" if tail else " and printed nothing"
        python = self.python_argv[0]
        if done.status == EXIT_PYTHON_TOO_OLD and done.python_version:
            version, _, executable = done.python_version.partition(" ")
            floor = ".".join(str(v) for v in MIN_PYTHON)
            return RemoteRuntimeMissingError(
                f"the device's Python is too old: {executable or python} on {where} is Python {version}, "
                f"the runner needs Python >= {floor}",
                f"install Python >= {floor} on the device (see `edgekit provision`), or pass --python "
                "with a newer interpreter",
            )
        if done.status in (127, 126) and not done.supervised:
            reason = "not found" if done.status == 127 else "not executable"
            return RemoteRuntimeMissingError(
                f"{python} {reason} on the device {where}",
                "install Python 3 on the device (with numpy and a runtime: see `edgekit provision`), "
                "or pass --python with the interpreter's path",
            )
        if done.setup_error is not None:
            what = done.setup_error.get("doing", doing)
            message = done.setup_error.get("message", "")
            if done.setup_error.get("errno") in _ENOSPC or _DISK_FULL_STDERR.search(message):
                return RemoteDiskFullError(f"the device {where} ran out of disk space while {what}: {message}",
                                           DISK_FULL_HINT)
            return TargetError(f"{what} on {where} failed: {message}",
                               "set a writable ssh.workdir in the device profile")
        if _DISK_FULL_STDERR.search(tail):
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
                f"{self._memory_text(done)}",
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


RUNNER_HINT_MISMATCH = "this is a host/runner version mismatch; reinstall edgekit"
OOM_HINT = (
    "use a smaller model, a lower precision (e.g. int8), fewer threads, or close other programs "
    "on the device"
)
DISK_FULL_HINT = "free space on the device (`edgekit device clean` empties edgekit's cache), or set ssh.workdir in the device profile to a larger filesystem"


def _apply_status(done: _Exec, info: dict[str, Any]) -> None:
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


def _parse_markers(done: _Exec) -> None:
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


def clean_device(host: str, device: str | None = None, profile_files: Any = (), **ssh: Any) -> dict[str, Any]:
    """``edgekit device clean``: remove edgekit's cache on ``host`` (and stale run directories).

    ``device`` names a profile for its SSH defaults (user, port, python, work directory);
    ``ssh`` are ``SSHTarget`` keywords (None values are ignored). Returns what
    :meth:`SSHTarget.clean_cache` returns plus ``address``.
    """
    options = {k: v for k, v in ssh.items() if v is not None}
    if device:
        from edgekit.devices import get as get_profile

        profile = get_profile(device, profile_files)
        defaults = {"python": profile.ssh.python, "workdir": profile.ssh.workdir,
                    "default_user": profile.ssh.user, "default_port": profile.ssh.port}
        options = {**defaults, **options}
    target = SSHTarget(host, **options)
    with target:
        removed = target.clean_cache()
    return {"address": target.address, **removed}
