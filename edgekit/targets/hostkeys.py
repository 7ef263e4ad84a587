"""Host key checking for SSH targets, as strict as OpenSSH's ``StrictHostKeyChecking``.

* a known, matching key: connect;
* an unknown host: refuse with the key type and SHA256 fingerprint, unless the caller passed
  ``accept_new`` (``--accept-new-host-key``), in which case the key is appended to known_hosts
  (written atomically: a temporary file in the same folder, then ``os.replace``);
* a host whose recorded key differs: refuse, **always** (``accept_new`` never overrides it).

The check runs on ``transport.get_remote_server_key()`` after the key exchange and before any
authentication, so no credential is ever offered to a host that failed it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import paramiko

from edgekit.errors import HostKeyChangedError, HostKeyUnknownError, UsageError
from edgekit.targets.sshconfig import known_hosts_name

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")

# key type in known_hosts -> host key algorithms that present it, in preference order
_ALGORITHMS_FOR_TYPE = {
    "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
}


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key (no padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class KnownHosts:
    """The known_hosts files used for one target: one writable user file (+ the system file)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, use_system: bool | None = None):
        self.path = Path(os.path.expanduser(str(path or DEFAULT_KNOWN_HOSTS)))
        self._keys = paramiko.HostKeys()
        self._load(self.path)
        # the system-wide file only when the caller did not pick a file (tests pick one)
        if use_system if use_system is not None else path is None:
            self._load(SYSTEM_KNOWN_HOSTS)

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            self._keys.load(str(path))
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise UsageError(
                f"cannot read the known_hosts file {path}: {exc}",
                "fix or remove the broken line, or pass another file with --known-hosts",
            ) from exc

    def lookup(self, host: str, port: int) -> dict[str, paramiko.PKey]:
        """Recorded keys for ``host:port``, by key type (empty when the host is unknown)."""
        found = self._keys.lookup(known_hosts_name(host, port))
        return dict(found) if found else {}

    def preferred_algorithms(self, host: str, port: int, offered: list[str]) -> list[str]:
        """Host key algorithms with the recorded types first (as OpenSSH orders them).

        Without this a server with several host keys could present a type we have not recorded
        and look "unknown" although we know another of its keys.
        """
        known_types = list(self.lookup(host, port))
        first: list[str] = []
        for key_type in known_types:
            for algorithm in _ALGORITHMS_FOR_TYPE.get(key_type, [key_type]):
                if algorithm in offered and algorithm not in first:
                    first.append(algorithm)
        return first + [a for a in offered if a not in first]

    def check(self, host: str, port: int, key: paramiko.PKey, *, accept_new: bool, what: str) -> None:
        """Raise unless ``key`` is the recorded key for ``host:port`` (or record it, see module doc).

        ``what`` names the host in messages, e.g. ``edgekit-test@127.0.0.1:2222``.
        """
        known = self.lookup(host, port)
        key_type = key.get_name()
        shown = f"{key_type} {fingerprint(key)}"
        if known:
            recorded = known.get(key_type)
            if recorded is not None and recorded == key:
                return
            if recorded is not None:
                was = f"{key_type} {fingerprint(recorded)}"
            else:
                was = ", ".join(f"{t} {fingerprint(k)}" for t, k in known.items())
            raise HostKeyChangedError(
                f"the host key of {what} has CHANGED: it is now {shown}, known_hosts "
                f"({self.path}) recorded {was}. Someone may be intercepting the connection, "
                "or the device was reinstalled",
                "if you know why the key changed (e.g. the device was re-flashed), remove the "
                f"old entry with `ssh-keygen -R '{known_hosts_name(host, port)}' -f {self.path}` "
                "and connect again; --accept-new-host-key never replaces a changed key",
            )
        if not accept_new:
            raise HostKeyUnknownError(
                f"the host key of {what} is not known: the device presented {shown}",
                "check the fingerprint on the device (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), "
                f"then rerun with --accept-new-host-key to record it in {self.path}",
            )
        self.add(host, port, key)
        log.info("recorded the host key of %s (%s) in %s", what, shown, self.path)

    def add(self, host: str, port: int, key: paramiko.PKey) -> None:
        """Append ``key`` to the user known_hosts file atomically, keeping every other line."""
        name = known_hosts_name(host, port)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        path = self.path
        try:
            if not path.parent.exists():
                path.parent.mkdir(mode=0o700, parents=True)
            try:
                existing = path.read_bytes()
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                existing, mode = b"", 0o600
            if existing and not existing.endswith(b"\n"):
                existing += b"\n"
            # resolve a symlinked known_hosts so the link survives the replace
            real = Path(os.path.realpath(path))
            fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=str(real.parent))
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(existing + line.encode("ascii"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, real)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise UsageError(
                f"cannot record the host key in {path}: {exc}",
                "pass a writable file with --known-hosts",
            ) from exc
        self._keys.add(name, key.get_name(), key)
