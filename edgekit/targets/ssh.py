"""An SSH device as a :class:`~edgekit.targets.base.Target` (paramiko only, no ``ssh`` binary).

One connection per target: ``open()`` connects (through ``ProxyJump`` hosts if configured),
checks the host key before any credential is offered, authenticates, and keeps the transport
and one SFTP session for every later push and command.

``run(job, local_dir)``:

1. creates ``<workdir>/edgekit-run-<uuid>`` (mode 0700, by SFTP; ``~`` in ``workdir`` is the
   SFTP home directory, never a shell tilde);
2. pushes the runner, ``job.files`` and ``job.json`` by SFTP;
3. runs ``<python> edgekit_runner.py <run_dir>`` inside a small POSIX ``sh`` wrapper: every
   path and argument goes through ``shlex.quote``, the wrapper turns a signal death into
   ``128+N`` (paramiko reports a bare signal death as -1) and records the kernel's ``oom_kill``
   counter before and after, so an OOM kill can be told from another ``SIGKILL``;
4. fetches ``result.json`` and ``job.fetch``, parses with ``parse_result``;
5. removes the run directory on every path (``finally``); a failed removal is retried in
   ``close()``.

Secrets never reach a message or a log line: a password is only handed to paramiko, and key
files are named by path, agent keys by type and fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shlex
import socket
import stat
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

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
PIDS_NAME = ".edgekit-pids"
DEFAULT_KEEPALIVE_S = 15
OUTPUT_TAIL_BYTES = 64 * 1024
_STATUS_MARK = "@@edgekit-status"

# Runs "$@" (python runner run_dir) in RUN_DIR ($1). POSIX sh so it works with any login shell
# that can run `sh -c` (bash, dash, busybox ash, zsh). Records both pids for a timeout kill and
# the oom_kill counter of /proc/vmstat (kernel >= 4.13, world-readable) around the run.
_WRAPPER = r"""d=$1; shift
cd "$d" || exit 125
o0=$(grep -s '^oom_kill ' /proc/vmstat)
"$@" </dev/null &
p=$!
echo "$$ $p" > .edgekit-pids
wait "$p"
rc=$?
o1=$(grep -s '^oom_kill ' /proc/vmstat)
mt=$(grep -s '^MemTotal:' /proc/meminfo)
printf '\n@@edgekit-status rc=%s oom0=%s oom1=%s memtotal=%s\n' "$rc" "${o0#oom_kill }" "${o1#oom_kill }" "$mt" >&2
exit "$rc"
"""

_OOM_STDERR = re.compile(
    r"MemoryError|std::bad_alloc|Cannot allocate memory|Failed to allocate memory|out of memory",
    re.IGNORECASE,
)
_DISK_FULL_STDERR = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)


@dataclass
class _Exec:
    """What one remote command did."""

    status: int  # exit status; -1 when the remote process died by a signal without a status
    stdout: bytes
    stderr: bytes  # without the wrapper's status line
    wall_s: float
    oom_before: int | None = None
    oom_after: int | None = None
    mem_total_mib: int | None = None
    wrapped: bool = False  # the wrapper's status line was seen

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

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[: len(self.data) - self.limit]

    def value(self) -> bytes:
        return bytes(self.data[-self.limit :])


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


class SSHTarget(Target):
    """Runs the runner on a device reached over SSH.

    ``host`` is ``[user@]addr[:port]``, ``[user@][ipv6]:port`` or an alias of the SSH config
    (``~/.ssh/config`` unless ``ssh_config`` says otherwise: HostName, User, Port,
    IdentityFile, IdentitiesOnly, ProxyJump, ServerAliveInterval, ConnectTimeout,
    UserKnownHostsFile are honoured). Explicit ``user``/``port`` win over the address, which
    wins over the config.

    ``python`` is the interpreter command on the device; it may hold arguments
    (``"env PYTHONPATH=/opt/site python3"``): it is split with ``shlex.split`` and every word
    quoted again. ``workdir`` holds the per-run directories (``~`` is the login's home).
    ``key_filename`` (a path or a list) is tried first, then IdentityFile lines, then the
    ssh-agent (``use_agent``), then ``~/.ssh/id_*`` when no key file was named; ``password`` is
    tried last, only when given. ``known_hosts`` defaults to ``~/.ssh/known_hosts`` (plus
    ``/etc/ssh/ssh_known_hosts``); ``accept_new_host_key`` records an unknown host's key there,
    a changed key is always refused. ``runner`` overrides the runner file (tests).
    ``profile_name`` / ``memory_mib`` describe the device in out-of-memory messages.
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
        known_hosts: str | os.PathLike[str] | None = None,
        accept_new_host_key: bool = False,
        connect_timeout: float = 10,
        command_timeout: float = 600,
        ssh_config: str | os.PathLike[str] | None = None,
        profile_name: str | None = None,
        memory_mib: int | None = None,
        runner: str | os.PathLike[str] | None = None,
        use_agent: bool = True,
        keepalive_s: int = DEFAULT_KEEPALIVE_S,
    ) -> None:
        if isinstance(key_filename, (str, os.PathLike)):
            key_files = [Path(os.path.expanduser(str(key_filename)))]
        else:
            key_files = [Path(os.path.expanduser(str(k))) for k in (key_filename or [])]
        self._config = load_ssh_config(ssh_config)
        self.endpoint: Endpoint = resolve_endpoint(
            host, self._config, user=user, port=port, key_filenames=key_files
        )
        self.python_argv = shlex.split(python) if python else []
        if not self.python_argv:
            raise UsageError("the device's python command is empty", "pass e.g. --python python3")
        self.python = python
        self.workdir = workdir
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout)
        self.accept_new_host_key = accept_new_host_key
        self.profile_name = profile_name
        self.memory_mib = memory_mib
        self.runner = Path(runner) if runner is not None else None
        self.use_agent = use_agent
        self.keepalive_s = keepalive_s
        self._password = password  # never logged, never put in a message
        self._known_hosts_arg = known_hosts
        self._known_hosts: dict[Path, KnownHosts] = {}
        self._transport: paramiko.Transport | None = None
        self._hops: list[paramiko.Transport] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._workdir_ready: str | None = None
        self._leftovers: list[str] = []  # run dirs whose removal failed; retried in close()

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

    def open(self) -> None:
        """Connect, check the host key, authenticate and start SFTP. Idempotent."""
        if self.is_open and self._sftp is not None:
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
            transport = hops[-1]
            try:
                self._sftp = transport.open_sftp_client()
                self._sftp.get_channel().settimeout(self.command_timeout)
                self._home = self._sftp.normalize(".")
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionFailedError(
                    f"{self.address} accepted the login but its SFTP subsystem did not start: {exc}",
                    "enable SFTP on the device (`Subsystem sftp internal-sftp` in sshd_config)",
                ) from exc
        except BaseException:
            for transport in reversed(hops):
                transport.close()
            self._sftp = None
            raise
        self._transport = hops[-1]
        self._hops = hops[:-1]
        log.debug("connected to %s (home %s)", self.address, self._home)

    def run(self, job: RunJob, local_dir: Path) -> RunResult:
        """Run one job in a fresh run directory; see the module docstring."""
        local_dir = Path(local_dir)
        names = {_check_relative_name(name, "job file"): path for name, path in job.files.items()}
        for reserved in (JOB_NAME, RUNNER_NAME, RESULT_NAME, PIDS_NAME):
            if reserved in names:
                raise UsageError(f"a job file may not be called {reserved!r} (the runner protocol uses it)")
        fetch = [_check_relative_name(name, "fetched file") for name in job.fetch]
        for local in names.values():
            if not Path(local).is_file():
                raise UsageError(f"the job file {local} does not exist")
        runner = self._runner_file()

        self._ensure_open()
        run_dir = self._make_run_dir()
        try:
            self._push(run_dir, runner, names, job.job)
            done = self._exec(
                _quote_all(["/bin/sh", "-c", _WRAPPER, "edgekit", run_dir, *self.python_argv,
                            posixpath.join(run_dir, RUNNER_NAME), run_dir]),
                timeout=self.command_timeout,
                run_dir=run_dir,
            )
            result = self._read_result(run_dir, done)
            files = self._fetch(run_dir, fetch, local_dir)
            return RunResult(result=result, files=files, wall_s=done.wall_s)
        finally:
            self._remove_run_dir(run_dir)

    def probe(self) -> dict[str, Any]:
        """Run ``runner --probe`` on the device and return its facts (for ``edgekit doctor``)."""
        runner = self._runner_file()
        self._ensure_open()
        run_dir = self._make_run_dir()
        try:
            self._push(run_dir, runner, {}, None)
            done = self._exec(
                _quote_all(["/bin/sh", "-c", _WRAPPER, "edgekit", run_dir, *self.python_argv,
                            posixpath.join(run_dir, RUNNER_NAME), "--probe", run_dir]),
                timeout=self.command_timeout,
                run_dir=run_dir,
            )
            for name in ("probe.json", RESULT_NAME):
                raw = self._read_remote(posixpath.join(run_dir, name))
                if raw is not None:
                    break
            else:
                raw = done.stdout.strip() or None
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
            self._remove_run_dir(run_dir)

    def exec(self, argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run one command on the device (each argument quoted); ``(status, stdout, stderr)``."""
        self._ensure_open()
        done = self._exec(_quote_all(argv), timeout=timeout or self.command_timeout)
        return done.status, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")

    def close(self) -> None:
        """Remove run directories left by failed cleanups, then close SFTP and the connection(s)."""
        if self._leftovers and self.is_open:
            for run_dir in list(self._leftovers):
                self._leftovers.remove(run_dir)
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
            return socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
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
                    key = paramiko.PKey.from_path(path)
                except paramiko.PasswordRequiredException:
                    skipped.append(f"key file {path} (encrypted: add it to ssh-agent)")
                    continue
                except TypeError:  # cryptography: "Password was not given but private key is encrypted"
                    skipped.append(f"key file {path} (encrypted: add it to ssh-agent)")
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
                "create one with `ssh-keygen -t ed25519`, install it with `ssh-copy-id`, or pass --key PATH"
            )
        else:
            message = f"{endpoint.address} refused every credential edgekit offered"
            hint = (
                f"add your public key to ~{user}/.ssh/authorized_keys on the device, or pass --key PATH"
            )
        details = "; ".join(tried + skipped)
        if details:
            hint += f". Tried: {details}"
        raise AuthFailedError(message, hint)

    def _ensure_open(self) -> None:
        if not (self.is_open and self._sftp is not None):
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
        self._workdir_ready = None

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
                "check the device and the network, or raise --command-timeout",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self.is_open:
                raise ConnectionFailedError(
                    f"lost the connection to {self.address} while {doing}: {exc or type(exc).__name__}",
                    "check the device and the network, then retry",
                ) from None
            raise TargetError(f"{doing} on {self.address} failed: {exc or type(exc).__name__}") from None

    # ------------------------------------------------------------------ remote files

    def _runner_file(self) -> Path:
        runner = self.runner or runner_path()
        if not runner.is_file():
            raise RunnerFailedError(
                f"the runner {runner} is missing from this edgekit installation",
                "reinstall edgekit",
            )
        return runner

    def _remote_workdir(self) -> str:
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

    def _mkdirs(self, path: str) -> None:
        assert self._sftp is not None
        try:
            attrs = self._sftp.stat(path)
        except FileNotFoundError:
            parent = posixpath.dirname(path)
            if parent and parent != path:
                self._mkdirs(parent)
            try:
                self._sftp.mkdir(path, mode=0o700)
            except OSError:
                attrs = self._sftp.stat(path)  # created meanwhile (another run)?
                if not stat.S_ISDIR(attrs.st_mode or 0):
                    raise
            return
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise UsageError(f"the device's work directory {path!r} exists but is not a directory")

    def _make_run_dir(self) -> str:
        workdir = self._remote_workdir()
        run_dir = posixpath.join(workdir, RUN_DIR_PREFIX + uuid.uuid4().hex)
        assert self._sftp is not None
        with self._guard("creating the run directory"):
            try:
                if self._workdir_ready != workdir:
                    self._mkdirs(workdir)
                    self._workdir_ready = workdir
                self._sftp.mkdir(run_dir, mode=0o700)
                self._sftp.chmod(run_dir, 0o700)
            except PermissionError:
                raise TargetError(
                    f"cannot create {run_dir!r} on {self.address}: permission denied",
                    "pass a writable --workdir",
                ) from None
        return run_dir

    def _push(self, run_dir: str, runner: Path, files: dict[str, Path], job: dict[str, Any] | None) -> None:
        assert self._sftp is not None
        sftp = self._sftp
        pushes = [(RUNNER_NAME, runner), *files.items()]
        needed = sum(Path(p).stat().st_size for _, p in pushes)
        made = {run_dir}
        current = ""
        try:
            with self._guard("pushing files"):
                for name, local in pushes:
                    current = name
                    remote = posixpath.join(run_dir, name)
                    parent = posixpath.dirname(remote)
                    if parent not in made:
                        self._mkdirs(parent)
                        made.add(parent)
                    sftp.put(str(local), remote)
                if job is not None:
                    current = JOB_NAME
                    with sftp.open(posixpath.join(run_dir, JOB_NAME), "w") as handle:
                        handle.write(json.dumps(job, indent=1).encode("utf-8"))
        except TargetError as exc:
            if isinstance(exc, ConnectionFailedError) or not self.is_open:
                raise
            free_kib = self._free_kib(run_dir)
            if free_kib is not None and free_kib * 1024 < needed + (1 << 20):
                raise RemoteDiskFullError(
                    f"the device's disk is full: {free_kib // 1024} MiB free under {self._remote_workdir()!r} "
                    f"on {self.address}, the run needs {needed / (1 << 20):.1f} MiB",
                    "free space on the device, or pass a --workdir on a larger filesystem",
                ) from None
            raise TargetError(f"could not push {current!r} to {self.address}: {exc}") from None

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

    def _read_remote(self, path: str) -> bytes | None:
        assert self._sftp is not None
        with self._guard(f"reading {posixpath.basename(path)}"):
            try:
                with self._sftp.open(path, "r") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None

    def _fetch(self, run_dir: str, names: list[str], local_dir: Path) -> dict[str, Path]:
        assert self._sftp is not None
        files: dict[str, Path] = {}
        for name in names:
            local = local_dir / name
            local.parent.mkdir(parents=True, exist_ok=True)
            with self._guard(f"fetching {name}"):
                try:
                    self._sftp.get(posixpath.join(run_dir, name), str(local))
                except FileNotFoundError:
                    raise RunnerFailedError(
                        f"the runner on {self.address} reported success but did not write {name!r}",
                        RUNNER_HINT_MISMATCH,
                    ) from None
            files[name] = local
        return files

    def _remove_run_dir(self, run_dir: str) -> None:
        """``rm -rf`` the run directory; never raises (a failure is retried in ``close()``)."""
        if not run_dir or RUN_DIR_PREFIX not in posixpath.basename(run_dir):
            return
        try:
            self._ensure_open()
            done = self._exec(_quote_all(["rm", "-rf", "--", run_dir]), timeout=60)
            if done.status != 0:
                raise TargetError(done.stderr_tail(3))
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
            log.warning("could not remove %s on %s: %s", run_dir, self.address, exc)
            if run_dir not in self._leftovers:
                self._leftovers.append(run_dir)

    # ------------------------------------------------------------------ commands

    def _exec(self, command: str, *, timeout: float, run_dir: str | None = None) -> _Exec:
        """Run ``command`` through the login shell; read stdout/stderr until it exits."""
        assert self._transport is not None
        out, err = _Tail(), _Tail()
        started = time.monotonic()
        deadline = started + timeout
        with self._guard("starting a command"):
            channel = self._transport.open_session(timeout=self._timeout_for(self.endpoint))
        try:
            with self._guard("running a command"):
                channel.settimeout(timeout)
                channel.exec_command(command)
                while True:
                    busy = False
                    if channel.recv_ready():
                        out.add(channel.recv(32768))
                        busy = True
                    if channel.recv_stderr_ready():
                        err.add(channel.recv_stderr(32768))
                        busy = True
                    if busy:
                        continue
                    if channel.exit_status_ready():
                        if not channel.recv_ready() and not channel.recv_stderr_ready():
                            break
                        continue
                    if not self._transport.is_active():
                        raise EOFError("the connection closed")
                    if time.monotonic() > deadline:
                        self._kill_run(run_dir)
                        raise ConnectionFailedError(
                            f"the command on {self.address} did not finish within {timeout:g} s "
                            "(the command timeout); it was stopped",
                            "raise --command-timeout, or run fewer/shorter inferences",
                        )
                    channel.status_event.wait(0.01)
                status = channel.recv_exit_status()
        finally:
            channel.close()
        done = _Exec(status=status, stdout=out.value(), stderr=err.value(), wall_s=time.monotonic() - started)
        _parse_status_line(done)
        return done

    def _kill_run(self, run_dir: str | None) -> None:
        """Kill the wrapper and the runner of a run that timed out (best effort)."""
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

    # ------------------------------------------------------------------ results

    def _read_result(self, run_dir: str, done: _Exec) -> dict[str, Any]:
        raw = self._read_remote(posixpath.join(run_dir, RESULT_NAME))
        signal_death = done.status in (-1, 137)
        if raw is None:
            raise self._failure_error(done, "running the job")
        try:
            return parse_result(raw, self.address)
        except RunnerFailedError as exc:
            if exc.kind is None and signal_death:  # a truncated result.json of a killed runner
                raise self._failure_error(done, "running the job") from None
            raise

    def _device_memory(self, done: _Exec) -> str:
        mib = self.memory_mib or done.mem_total_mib
        if mib is None:
            return ""
        name = f" (profile {self.profile_name})" if self.profile_name else ""
        return f"; the device{name} has {mib} MiB"

    def _failure_error(self, done: _Exec, doing: str) -> TargetError:
        """The typed error for a runner that exited without a (readable) result."""
        where = self.address
        tail = done.stderr_tail()
        shown_tail = f"; its last output:\n{tail}" if tail else " and printed nothing"
        python = self.python_argv[0]
        if done.status in (127, 126) and not done.stdout:
            reason = "not found" if done.status == 127 else "not executable"
            return RemoteRuntimeMissingError(
                f"{python} {reason} on the device {where}",
                "install Python 3 on the device (with numpy and a runtime: see `edgekit provision`), "
                "or pass --python with the interpreter's path",
            )
        if done.status == 125 and done.wrapped is False:
            return TargetError(f"the run directory vanished on {where} before the runner started")
        if _DISK_FULL_STDERR.search(tail):
            return RemoteDiskFullError(
                f"the device {where} ran out of disk space while {doing}{shown_tail}",
                "free space on the device, or pass a --workdir on a larger filesystem",
            )
        oom = done.killed_by_oom
        killed = done.status in (137, -1)
        if (killed and oom) or (done.status == 137 and oom is None) or _OOM_STDERR.search(tail):
            return RemoteOutOfMemoryError(
                f"the model ran out of memory on the device {where}: the runner was killed "
                f"{'by the kernel OOM killer' if oom else '(out of memory)'}{self._device_memory(done)}",
                "use a smaller model, a lower precision (e.g. int8), fewer threads, or close other "
                "programs on the device",
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
            "rerun with --debug; if the device's Python is older than 3.6 pass --python with a newer one",
        )


RUNNER_HINT_MISMATCH = "this is a host/runner version mismatch; reinstall edgekit"


def _parse_status_line(done: _Exec) -> None:
    """Pick the wrapper's status line off stderr (and drop it from what users see)."""
    text = done.stderr.decode("utf-8", "replace")
    index = text.rfind(_STATUS_MARK)
    if index < 0:
        return
    line = text[index:].splitlines()[0]
    done.stderr = (text[:index].rstrip("\n") + text[index + len(line) :].lstrip("\n")).encode("utf-8")
    done.wrapped = True
    fields = dict(re.findall(r"(\w+)=(\S*)", line.split(" memtotal=")[0]))
    try:
        done.oom_before = int(fields.get("oom0", ""))
        done.oom_after = int(fields.get("oom1", ""))
    except ValueError:
        done.oom_before = done.oom_after = None
    match = re.search(r"memtotal=MemTotal:\s*(\d+)\s*kB", line)
    if match:
        done.mem_total_mib = int(match.group(1)) // 1024
