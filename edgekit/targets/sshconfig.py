"""Where to connect for an SSH target: ``[user@]addr[:port]`` plus ``~/.ssh/config``.

Precedence follows OpenSSH: explicit arguments (``--user``, ``--port``, ``--key``) first, then
what the address itself says (``user@host:port``), then the matching ``Host`` block of the SSH
config, then defaults (the local user name, port 22, the default identity files).

The default config is ``~/.ssh/config`` preceded by the ``Host edgekit-<name>`` blocks that
``edgekit emulator start`` writes for its running devices (``edgekit.emulator.include_file()``),
so ``--host edgekit-pi4`` works without touching ``~/.ssh/config`` (paramiko ignores
``Include``): user, port, key and the known_hosts file edgekit wrote with the device's host key
come from there. Only blocks naming an ``edgekit-`` alias are taken from that file, so it can
never change how any other host is reached.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from edgekit.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_PORT = 22
# what ``edgekit emulator`` names its devices' aliases (emulator._NAME_RE after the prefix)
EDGEKIT_ALIAS = re.compile(r"^edgekit-[a-z0-9][a-z0-9._-]{0,62}$")
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
MAX_JUMP_DEPTH = 8


@dataclass(frozen=True)
class Address:
    """A parsed ``[user@]addr[:port]``; ``user``/``port`` are None when not given."""

    host: str
    user: str | None = None
    port: int | None = None


@dataclass
class Endpoint:
    """One SSH hop, fully resolved: where to connect, as whom, with which key files."""

    alias: str  # what the user wrote (an SSH config alias or a host name)
    host: str  # what to connect to (HostName)
    port: int
    user: str
    identity_files: list[Path] = field(default_factory=list)  # --key, then IdentityFile lines
    identities_only: bool = False
    keepalive_s: int | None = None
    connect_timeout: float | None = None
    known_hosts: Path | None = None  # UserKnownHostsFile from the config, when set
    jumps: list["Endpoint"] = field(default_factory=list)  # hops to go through, first hop first

    @property
    def address(self) -> str:
        """``user@host:port`` (IPv6 hosts in brackets)."""
        return f"{self.user}@{format_host_port(self.host, self.port)}"

    @property
    def host_port(self) -> str:
        return format_host_port(self.host, self.port)


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def known_hosts_name(host: str, port: int) -> str:
    """The name a host is recorded under in known_hosts (as OpenSSH writes it)."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def default_identity_files() -> list[Path]:
    """``~/.ssh/id_*``: tried (after the agent) only when no key file was given or configured."""
    return [Path(os.path.expanduser(p)) for p in DEFAULT_IDENTITY_FILES]


def _parse_port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(
            f"bad SSH address {original!r}: port {text!r} is not a number from 1 to 65535",
            "write the address as [user@]host[:port], e.g. pi@192.168.1.20:22",
        )
    return int(text)


def parse_address(text: str) -> Address:
    """Parse ``[user@]addr[:port]``, ``[user@][ipv6]:port`` or a bare IPv6 address."""
    original = text
    text = text.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    user = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
        if not user:
            user = None
    port = None
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", text)
        if not match:
            raise UsageError(
                f"bad SSH address {original!r}: unbalanced brackets",
                "write an IPv6 address with a port as [addr]:port, e.g. [fe80::1]:22",
            )
        text, port_text = match.group(1), match.group(2)
        if port_text is not None:
            port = _parse_port(port_text, original)
    elif text.count(":") == 1:
        text, port_text = text.split(":")
        port = _parse_port(port_text, original)
    # two or more colons without brackets: a bare IPv6 address, no port
    if not text or any(ch.isspace() for ch in text) or "/" in text:
        raise UsageError(
            f"bad SSH address {original!r}: no host name",
            "write the address as [user@]host[:port], e.g. pi@192.168.1.20",
        )
    return Address(host=text, user=user, port=port)


def edgekit_ssh_config() -> Path:
    """The ssh_config ``edgekit emulator`` keeps for its running devices."""
    from edgekit.emulator import include_file

    return include_file()


def edgekit_host_blocks(text: str) -> str:
    """The ``Host edgekit-<name>`` blocks of ``text``; anything else (``Host *``, ``Match``,
    options before the first block) is dropped."""
    kept: list[str] = []
    keep = False
    for line in text.splitlines():
        words = line.split()
        keyword = words[0].lower() if words else ""
        if keyword in ("host", "match"):
            patterns = words[1:]
            keep = keyword == "host" and bool(patterns) and all(EDGEKIT_ALIAS.match(p) for p in patterns)
        elif keyword.startswith("host=") or keyword.startswith("match="):
            keep = False  # "Host=x" spellings: not what edgekit writes
        if keep:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def _read_config(path: Path) -> str:
    """The text of an SSH config file, checked to parse (errors name the file)."""
    try:
        text = path.read_text()
        paramiko.SSHConfig.from_text(text)
    except (OSError, UnicodeDecodeError, paramiko.SSHException, ValueError) as exc:
        raise UsageError(f"cannot read the SSH config {path}: {exc}") from exc
    return text


def _edgekit_hosts_text() -> str:
    path = edgekit_ssh_config()
    if not path.is_file():
        return ""
    try:
        return edgekit_host_blocks(_read_config(path))
    except UsageError as exc:  # edgekit's own cache file must never stop an SSH connection
        log.warning("ignoring %s", exc.message)
        return ""


def load_ssh_config(path: str | os.PathLike[str] | None, *,
                    edgekit_hosts: bool | None = None) -> paramiko.SSHConfig:
    """The SSH config at ``path`` (default ``~/.ssh/config``); empty when the file is missing.

    ``edgekit_hosts`` (default: only when ``path`` is None) puts the emulated devices' ``Host
    edgekit-<name>`` blocks first (see the module doc): first so that a ``Host *`` in the
    user's file cannot give them another user or port.
    """
    config_path = Path(os.path.expanduser(str(path))) if path else Path.home() / ".ssh" / "config"
    text = _read_config(config_path) if config_path.is_file() else ""
    if edgekit_hosts if edgekit_hosts is not None else path is None:
        text = _edgekit_hosts_text() + text
    return paramiko.SSHConfig.from_text(text)


def _yes(value: object) -> bool:
    return str(value).strip().lower() in {"yes", "true", "1"}


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def resolve_endpoint(
    target: str,
    config: paramiko.SSHConfig,
    *,
    user: str | None = None,
    port: int | None = None,
    key_filenames: list[Path] | None = None,
    default_user: str | None = None,
    default_port: int | None = None,
    use_config_jump: bool = True,
    _depth: int = 0,
) -> Endpoint:
    """Resolve ``target`` (an address or a config alias) into an :class:`Endpoint`.

    ``default_user``/``default_port`` (a device profile's) apply only when neither the address
    nor the config names a user/port. ``ProxyJump`` hops (comma-separated, ``none`` to disable) are resolved recursively: the first
    hop uses its own config (including its own ProxyJump), later hops are reached through the
    previous one, as ``ssh -J`` does.
    """
    if _depth > MAX_JUMP_DEPTH:
        raise UsageError(
            f"ProxyJump for {target!r} nests more than {MAX_JUMP_DEPTH} hops (a loop in the SSH config?)"
        )
    address = parse_address(target)
    entry = config.lookup(address.host)
    if set(entry) <= {"hostname"} and entry.get("hostname", address.host) == address.host:
        _refuse_stopped_emulator(address.host)  # no config names it
    host = str(entry.get("hostname") or address.host)
    final_user = user or address.user or entry.get("user") or default_user or _local_user()
    final_port = (
        port or address.port or _int_or_none(entry.get("port")) or default_port or DEFAULT_PORT
    )

    identity_files: list[Path] = []
    for candidate in list(key_filenames or []) + list(entry.get("identityfile") or []):
        path = Path(os.path.expanduser(str(candidate)))
        if path not in identity_files:
            identity_files.append(path)

    known_hosts = None
    user_known = entry.get("userknownhostsfile")
    if user_known:
        first = str(user_known).split()[0]
        if first.lower() != "none":
            known_hosts = Path(os.path.expanduser(first))

    timeout = _int_or_none(entry.get("connecttimeout"))
    endpoint = Endpoint(
        alias=target,
        host=host,
        port=int(final_port),
        user=str(final_user),
        identity_files=identity_files,
        identities_only=_yes(entry.get("identitiesonly", "no")),
        keepalive_s=_int_or_none(entry.get("serveraliveinterval")),
        connect_timeout=float(timeout) if timeout else None,
        known_hosts=known_hosts,
    )

    jump_spec = str(entry.get("proxyjump") or "").strip() if use_config_jump else ""
    if jump_spec and jump_spec.lower() != "none":
        hops = [hop.strip() for hop in jump_spec.split(",") if hop.strip()]
        chain: list[Endpoint] = []
        for index, hop in enumerate(hops):
            hop_endpoint = resolve_endpoint(
                hop, config, use_config_jump=(index == 0), _depth=_depth + 1
            )
            if index == 0:
                chain.extend(hop_endpoint.jumps)
                hop_endpoint.jumps = []
            chain.append(hop_endpoint)
        endpoint.jumps = chain
    elif entry.get("proxycommand") and str(entry["proxycommand"]).strip().lower() != "none":
        raise UsageError(
            f"the SSH config gives {target!r} a ProxyCommand, which edgekit does not run",
            "use ProxyJump (edgekit connects through the jump host itself) or connect directly",
        )
    return endpoint


def _refuse_stopped_emulator(host: str) -> None:
    """An ``edgekit-<name>`` alias no config names, of an emulated device that is not running:
    say so, rather than let the name go to DNS."""
    if not EDGEKIT_ALIAS.match(host):
        return
    from edgekit import emulator

    name = host[len("edgekit-") :]
    try:
        state = emulator.load_state(name)
    except UsageError:  # not a valid instance name
        return
    if state is not None and not emulator.is_running(state):
        raise UsageError(
            f"the emulated device {name!r} ({host}) is not running",
            f"start it: sudo edgekit emulator start {state.device} --name {name}",
        )


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        return "root" if os.geteuid() == 0 else str(os.geteuid())
