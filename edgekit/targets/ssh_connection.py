"""One SSH connection to a device: reach it (through jump hosts), check its host key, log in.

``open()`` connects through the endpoint's ``ProxyJump`` hosts, checks every host key (against
:mod:`edgekit.targets.hostkeys`) before any credential is offered, and authenticates (key
files, the ssh-agent, ``~/.ssh/id_*``, then a password). Keep-alives go out every
``keepalive_s`` seconds and the socket gives up on unacknowledged data after three of them
(``TCP_USER_TIMEOUT``), so a dead link is noticed in seconds, not after TCP's ~15 minutes.
SFTP starts on first use, and learns the login's home directory with it.

Secrets never reach a message or a log line: a password or passphrase is only handed to
paramiko, and key files are named by path, agent keys by type and fingerprint.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import paramiko

from edgekit.errors import AuthFailedError, ConnectionFailedError, EdgekitError, TargetError
from edgekit.targets.cache import TransferStats
from edgekit.targets.hostkeys import KnownHosts, fingerprint
from edgekit.targets.ssh_options import SSHOptions
from edgekit.targets.sshconfig import Endpoint, default_identity_files, load_ssh_config, resolve_endpoint

log = logging.getLogger(__name__)

KEEPALIVE_COUNT_MAX = 3  # as OpenSSH's ServerAliveCountMax


class _KeyLocked(Exception):
    """An encrypted key file that could not be opened (the message says why; no secret in it)."""


class SSHConnection:
    """The transport to one device (and its jump hosts), its SFTP session and its home directory.

    ``options`` are resolved (:meth:`SSHOptions.resolved`). ``stats`` counts connections and
    reconnects. ``on_close`` callbacks run whenever the connection is dropped (also before a
    reconnect), so the parts that keep per-connection state can note what is left to do.
    """

    def __init__(self, host: str, options: SSHOptions, stats: TransferStats) -> None:
        self.options = options
        self.stats = stats
        self.endpoint: Endpoint = resolve_endpoint(
            host,
            load_ssh_config(options.ssh_config),
            user=options.user,
            port=options.port,
            key_filenames=options.key_files(),
            default_user=options.default_user,
            default_port=options.default_port,
        )
        self.transport: paramiko.Transport | None = None
        self.home: str | None = None  # the login's home directory, once SFTP or the supervisor said
        self.on_close: list[Callable[[], None]] = []
        self._hops: list[paramiko.Transport] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._keys: dict[Path, paramiko.PKey] = {}  # decrypted key files, for reconnects
        self._known_hosts: dict[Path, KnownHosts] = {}

    @property
    def address(self) -> str:
        """``user@host:port`` of the device (after SSH config resolution)."""
        return self.endpoint.address

    @property
    def is_open(self) -> bool:
        return self.transport is not None and self.transport.is_active()

    @property
    def known_hosts_path(self) -> Path:
        return self._known_hosts_for(self.endpoint).path

    def timeout_for(self, endpoint: Endpoint) -> float:
        """The connect timeout for one hop (its config's ConnectTimeout, else the option)."""
        return endpoint.connect_timeout or self.options.connect_timeout  # type: ignore[return-value]

    def open(self) -> None:
        """Connect through every hop, check host keys and authenticate. Idempotent."""
        if self.is_open:
            return
        self.close()
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
        self.transport = hops[-1]
        self._hops = hops[:-1]
        if self.stats.connections:
            self.stats.reconnects += 1
        self.stats.connections += 1
        log.debug("connected to %s", self.address)

    def ensure_open(self) -> None:
        """Reconnect when the connection was lost (or never made)."""
        if not self.is_open:
            if self.transport is not None:
                log.info("the connection to %s was lost; reconnecting", self.address)
            self.open()

    def close(self) -> None:
        """Close SFTP and every transport (never raises); tell the ``on_close`` callbacks."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # closing a dead session must not raise
                pass
        for transport in [self.transport, *reversed(self._hops)]:
            if transport is not None:
                transport.close()
        self._sftp = None
        self.transport = None
        self._hops = []
        for callback in self.on_close:
            callback()

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session, started on first use (and the home directory with it)."""
        self.ensure_open()
        if self._sftp is None:
            assert self.transport is not None
            try:
                sftp = self.transport.open_sftp_client()
                sftp.get_channel().settimeout(self.options.command_timeout)
                home = sftp.normalize(".")
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not self.still_connected():
                    raise ConnectionFailedError(f"lost the connection to {self.address} while starting SFTP: "
                                                f"{str(exc) or type(exc).__name__}") from None
                raise ConnectionFailedError(
                    f"{self.address} accepted the login but its SFTP subsystem did not start: {exc}",
                    "enable SFTP on the device (`Subsystem sftp internal-sftp` in sshd_config)",
                ) from None
            self._sftp = sftp
            self.home = self.home or home
        return self._sftp

    def open_session(self) -> paramiko.Channel:
        """A new channel on the device's transport (the caller runs one command on it)."""
        assert self.transport is not None
        return self.transport.open_session(timeout=self.timeout_for(self.endpoint))

    def still_connected(self, grace_s: float = 0.25) -> bool:
        """After an error: is the connection still up? (paramiko's reader thread may need a moment
        to notice a dead socket, so a lost link can surface first as a failed channel operation.)"""
        deadline = time.monotonic() + grace_s
        while self.is_open:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.02)
        return False

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Turn a dropped connection into ConnectionFailedError, SFTP errors into TargetError."""
        try:
            yield
        except EdgekitError:
            raise
        except (socket.timeout, TimeoutError):
            raise ConnectionFailedError(
                f"{self.address} stopped answering while {doing} (no reply within "
                f"{self.options.command_timeout:g} s)",
                "check the device and the network, then retry (or raise --command-timeout)",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, EOFError) or not self.still_connected():
                raise ConnectionFailedError(
                    f"lost the connection to {self.address} while {doing}: {str(exc) or type(exc).__name__}",
                    "check the device and the network, then retry",
                ) from None
            raise TargetError(f"{doing} on {self.address} failed: {str(exc) or type(exc).__name__}") from None

    # ------------------------------------------------------------------ reaching a hop

    def _known_hosts_for(self, endpoint: Endpoint) -> KnownHosts:
        path = self.options.known_hosts or endpoint.known_hosts
        use_system = self.options.known_hosts is None
        resolved = Path(os.path.expanduser(str(path))) if path else Path.home() / ".ssh" / "known_hosts"
        if resolved not in self._known_hosts:
            self._known_hosts[resolved] = KnownHosts(resolved, use_system=use_system)
        return self._known_hosts[resolved]

    def _open_socket(self, endpoint: Endpoint) -> socket.socket:
        timeout = self.timeout_for(endpoint)
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
        self._tune_socket(sock, endpoint)
        return sock

    def _tune_socket(self, sock: socket.socket, endpoint: Endpoint) -> None:
        # SSH requests and replies are small: no Nagle delay (a 40 ms stall per SFTP round trip)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # A dead link shows as data that is never acknowledged (keep-alives are data): give up
        # after KEEPALIVE_COUNT_MAX keep-alive intervals, as ServerAliveCountMax would.
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            keepalive = endpoint.keepalive_s or self.options.keepalive_s
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                int(max(keepalive, 0.2) * KEEPALIVE_COUNT_MAX * 1000))
            except OSError:
                pass

    def _open_forward(self, via: paramiko.Transport, jump: Endpoint, endpoint: Endpoint) -> paramiko.Channel:
        """A ``direct-tcpip`` channel from the jump host ``jump`` to ``endpoint``."""
        timeout = self.timeout_for(endpoint)
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
        timeout = self.timeout_for(endpoint)
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
            self._handshake(transport, endpoint, timeout)
            key = transport.get_remote_server_key()
            known_hosts.check(
                endpoint.host,
                endpoint.port,
                key,
                accept_new=bool(self.options.accept_new_host_key),
                what=endpoint.address,
            )
            _Login(self, transport, endpoint, is_target=endpoint is self.endpoint).run()
            transport.set_keepalive(endpoint.keepalive_s or self.options.keepalive_s)
            return transport
        except BaseException:
            transport.close()
            raise

    @staticmethod
    def _handshake(transport: paramiko.Transport, endpoint: Endpoint, timeout: float) -> None:
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

    def load_key(self, path: Path) -> paramiko.PKey:
        """A key file as a PKey; an encrypted one is opened with the passphrase (asked once)."""
        if path in self._keys:
            return self._keys[path]
        try:
            key = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "no password"
            given = self.options.passphrase
            passphrase = given(path) if callable(given) else given
            if not passphrase:
                raise _KeyLocked("encrypted: add it to ssh-agent, or run edgekit where it can ask for "
                                 "the passphrase") from None
            try:
                key = paramiko.PKey.from_path(path, passphrase.encode("utf-8"))
            except (ValueError, TypeError, paramiko.SSHException):
                raise _KeyLocked("encrypted, and the passphrase did not open it") from None
        self._keys[path] = key
        return key


class _Login:
    """One hop's authentication: key files, the agent, default keys, then a password.

    Keeps what was tried and skipped, so a refusal says exactly what was offered.
    """

    def __init__(self, connection: SSHConnection, transport: paramiko.Transport, endpoint: Endpoint,
                 *, is_target: bool) -> None:
        self.connection = connection
        self.transport = transport
        self.endpoint = endpoint
        self.is_target = is_target
        self.user = endpoint.user
        self.tried: list[str] = []
        self.skipped: list[str] = []
        self.publickey_allowed = True
        self.seen_keys: set[bytes] = set()

    def run(self) -> None:
        """Log in, or raise AuthFailedError naming every credential tried and skipped."""
        options = self.connection.options
        if self._try_key_files(self.endpoint.identity_files, explicit=True):
            return
        if options.use_agent and not self.endpoint.identities_only and self.publickey_allowed:
            if self._try_agent():
                return
        if not self.endpoint.identity_files and self._try_key_files(default_identity_files(), explicit=False):
            return
        password = options.password
        if self.is_target and password is not None:
            if self._guarded("password", lambda: self.transport.auth_password(self.user, password)):
                return
        self._refuse()

    def _attempt(self, label: str, do: Callable[[], Any]) -> bool:
        try:
            remaining = do()
        except paramiko.BadAuthenticationType as exc:
            self.tried.append(f"{label} (the server accepts only: {', '.join(exc.allowed_types) or 'nothing'})")
            if "publickey" not in exc.allowed_types:
                self.publickey_allowed = False
            return False
        except paramiko.AuthenticationException:
            self.tried.append(label)
            return False
        if remaining:
            raise AuthFailedError(
                f"{self.endpoint.address} wants a second authentication step "
                f"({', '.join(remaining)}) after {label}, which edgekit cannot answer",
                "allow key-only login for this user on the device",
            )
        return self.transport.is_authenticated()

    def _guarded(self, label: str, do: Callable[[], Any]) -> bool:
        if not self.transport.is_active():
            return False
        try:
            return self._attempt(label, do)
        except (paramiko.SSHException, EOFError, OSError):
            self.skipped.append("the server closed the connection (too many attempts? see MaxAuthTries)")
            return False

    def _try_key(self, label: str, key: paramiko.PKey) -> bool:
        return self._guarded(label, lambda: self.transport.auth_publickey(self.user, key))

    def _try_key_files(self, paths: list[Path], explicit: bool) -> bool:
        for path in paths:
            if not self.publickey_allowed:
                return False
            if not path.exists():
                if explicit:
                    self.skipped.append(f"key file {path} (does not exist)")
                continue
            try:
                key = self.connection.load_key(path)
            except _KeyLocked as exc:
                self.skipped.append(f"key file {path} ({exc})")
                continue
            except OSError as exc:
                self.skipped.append(f"key file {path} (cannot read it: {exc.strerror})")
                continue
            except Exception:  # never show the exception: some carry the key bytes
                self.skipped.append(f"key file {path} (not a private key edgekit can use)")
                continue
            if key.asbytes() in self.seen_keys:
                continue
            self.seen_keys.add(key.asbytes())
            if self._try_key(f"key file {path}", key):
                return True
        return False

    def _try_agent(self) -> bool:
        agent = None
        try:
            agent = paramiko.Agent()
            agent_keys = list(agent.get_keys())
        except (paramiko.SSHException, OSError):
            agent_keys = []
            self.skipped.append("ssh-agent (could not talk to it)")
        try:
            for key in agent_keys:
                if not self.publickey_allowed or key.asbytes() in self.seen_keys:
                    continue
                self.seen_keys.add(key.asbytes())
                if self._try_key(f"ssh-agent key {key.get_name()} {fingerprint(key)}", key):
                    return True
        finally:
            if agent is not None:
                agent.close()
        return False

    def _refuse(self) -> None:
        address = self.endpoint.address
        if not self.tried:
            message = f"edgekit had no credential to offer {address}"
            hint = (
                "no usable SSH key was found (no ssh-agent key, no ~/.ssh/id_ed25519, id_ecdsa or id_rsa): "
                "create one with `ssh-keygen -t ed25519`, install it with `ssh-copy-id`, or pass --identity PATH"
            )
        else:
            message = f"{address} refused every credential edgekit offered"
            hint = (
                f"add your public key to ~{self.user}/.ssh/authorized_keys on the device, or pass --identity PATH"
            )
        details = "; ".join(self.tried + self.skipped)
        if details:
            hint += f". Tried: {details}"
        raise AuthFailedError(message, hint)


__all__ = ["KEEPALIVE_COUNT_MAX", "SSHConnection"]
