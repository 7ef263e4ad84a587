"""How to reach and use an SSH device: one frozen options object, built once.

The CLI (its ``--identity``, ``--python``, ... flags), a fleet file (its defaults and each
host's keys) and ``provision`` each build one :class:`SSHOptions`; it travels unchanged through
``DeployOptions.ssh`` and ``create_target`` to :class:`~edgekit.targets.ssh.SSHTarget`. A field
left at None is *unset*: a layer below it (the device profile, then the target's defaults) decides.

This module imports no paramiko, so the CLI and ``deploy`` can build options without it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.devices import DeviceProfile

DEFAULT_SITE_DIR = "~/.local/lib/edgekit-site"  # where `edgekit provision` installs runtimes
DEFAULT_PYTHON = "python3"
DEFAULT_WORKDIR = "~/.cache/edgekit"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 600.0
DEFAULT_KEEPALIVE_S = 15.0
DEFAULT_RECONNECT_S = 30.0
NO_SITE_DIR = ""  # site_dir value meaning "never put a provisioned folder on sys.path"

Passphrase = Union[str, Callable[[Path], Union[str, None]], None]
KeyFiles = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]], None]


@dataclass(frozen=True)
class SSHOptions:
    """Everything an SSH target takes beyond its address; None means "not set here".

    ``user``/``port`` win over the address, which wins over the SSH config, which wins over
    ``default_user``/``default_port`` (a device profile's). ``python`` is the interpreter
    command on the device (it may hold arguments: ``"env PYTHONPATH=/opt/site python3"``);
    ``workdir`` holds the run directories and the cache. ``key_filename`` is tried first, then
    the config's IdentityFile lines, the ssh-agent (``use_agent``) and ``~/.ssh/id_*``;
    ``passphrase`` (a string or a callable taking the key's path) opens an encrypted key,
    ``password`` is tried last. ``accept_new_host_key`` records an unknown host's key.
    ``connect_timeout`` bounds each connection attempt, ``command_timeout`` a run,
    ``keepalive_s`` the keep-alive interval, ``reconnect_s`` how long a run whose link dropped
    tries to collect its result. ``runner`` overrides the runner file (tests). ``site_dir`` is
    put first on the runner's ``sys.path`` when it exists on the device (``""``: never).
    ``profile_name``/``memory_mib`` describe the device in out-of-memory messages.
    """

    user: str | None = None
    port: int | None = None
    python: str | None = None
    workdir: str | None = None
    key_filename: KeyFiles = None
    password: str | None = dataclasses.field(default=None, repr=False)  # never shown
    passphrase: Passphrase = dataclasses.field(default=None, repr=False)  # never shown
    known_hosts: str | os.PathLike[str] | None = None
    accept_new_host_key: bool | None = None
    connect_timeout: float | None = None
    command_timeout: float | None = None
    ssh_config: str | os.PathLike[str] | None = None
    runner: str | os.PathLike[str] | None = None
    use_agent: bool | None = None
    keepalive_s: float | None = None
    reconnect_s: float | None = None
    site_dir: str | None = None
    default_user: str | None = None
    default_port: int | None = None
    profile_name: str | None = None
    memory_mib: int | None = None

    @classmethod
    def coerce(cls, value: "SSHOptions | Mapping[str, Any] | None") -> "SSHOptions":
        """``value`` as options: itself, a mapping of field names (None values unset), or none."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value)
        raise UsageError(f"SSH options must be SSHOptions or a mapping, not {type(value).__name__}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SSHOptions":
        """Options from ``{field: value}``; an unknown name is a usage error (a typo never passes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown SSH option(s): {', '.join(unknown)}", f"use: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def for_profile(cls, profile: "DeviceProfile") -> "SSHOptions":
        """A device profile's SSH defaults (user, port, python, work directory) and its description."""
        return cls(python=profile.ssh.python, workdir=profile.ssh.workdir, default_user=profile.ssh.user,
                   default_port=profile.ssh.port, profile_name=profile.name, memory_mib=profile.memory_mib)

    def merged(self, over: "SSHOptions | Mapping[str, Any] | None") -> "SSHOptions":
        """These options with every field ``over`` sets (not None) taking its place."""
        over = SSHOptions.coerce(over)
        return dataclasses.replace(self, **over.set_fields())

    def set_fields(self) -> dict[str, Any]:
        """The fields that are set (not None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def key_files(self) -> list[Path]:
        """``key_filename`` as a list of paths (``~`` expanded)."""
        keys = self.key_filename
        if isinstance(keys, (str, os.PathLike)):
            keys = [keys]
        return [Path(os.path.expanduser(str(k))) for k in (keys or [])]

    def resolved(self) -> "SSHOptions":
        """Every tunable set: unset ones take the target's defaults; timeouts are checked."""
        defaults = SSHOptions(python=DEFAULT_PYTHON, workdir=DEFAULT_WORKDIR, accept_new_host_key=False,
                              connect_timeout=DEFAULT_CONNECT_TIMEOUT_S, command_timeout=DEFAULT_COMMAND_TIMEOUT_S,
                              use_agent=True, keepalive_s=DEFAULT_KEEPALIVE_S, reconnect_s=DEFAULT_RECONNECT_S,
                              site_dir=DEFAULT_SITE_DIR)
        options = defaults.merged(self)
        for name, value in (("connect timeout", options.connect_timeout), ("command timeout", options.command_timeout)):
            if not float(value) > 0:  # type: ignore[arg-type]
                raise UsageError(f"the {name} must be a positive number of seconds, not {value!r}")
        return dataclasses.replace(options, connect_timeout=float(options.connect_timeout),  # type: ignore[arg-type]
                                   command_timeout=float(options.command_timeout),  # type: ignore[arg-type]
                                   reconnect_s=float(options.reconnect_s))  # type: ignore[arg-type]


__all__ = ["DEFAULT_SITE_DIR", "NO_SITE_DIR", "Passphrase", "SSHOptions"]
