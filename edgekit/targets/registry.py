"""Which targets exist: one line each in :data:`TARGETS`; everything else asks here.

A target is chosen by where the user points: ``--emulate`` picks the one that runs on this
host (``runs_here``); an address picks the target whose ``scheme`` prefixes it
(``adb:SERIAL`` for a target registered with ``scheme="adb"``), else the default one (SSH:
``[user@]host[:port]`` or an SSH config alias). Reports name where a run happened from the
same entry (``where``, ``representative_latency``), looked up by ``TargetInfo.kind``.

A new target is its module (a ``from_profile(profile, address, options, progress)`` factory
returning a :class:`~edgekit.targets.base.Target`) and one line here. Modules are imported on
use, so ``import edgekit`` never imports paramiko.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.devices import DeviceProfile
    from edgekit.targets.base import Target
    from edgekit.targets.ssh_options import SSHOptions


@dataclass(frozen=True)
class TargetKind:
    """One registered target.

    ``kind`` is its ``TargetInfo.kind`` (the report's ``target.kind``); ``factory`` and
    ``check`` are ``"module:function"``: ``factory(profile, address, options, progress)``
    builds it, ``check(address)`` refuses a malformed address before any work. ``where`` is
    how reports name it (fields: ``kind``, ``address``, ``reproduced``).
    """

    kind: str
    factory: str
    scheme: str | None = None  # addresses "<scheme>:..." are this target's
    runs_here: bool = False  # the target `--emulate` picks: this host, no address
    check: str | None = None
    where: str = "{kind} {address}"
    representative_latency: bool = True  # False: reports warn that latency is not the device's

    def build(self, profile: "DeviceProfile", address: str | None, options: "SSHOptions",
              progress: Any = None) -> "Target":
        return _load(self.factory)(profile, address, options, progress)

    def check_address(self, address: str) -> None:
        if self.check:
            _load(self.check)(address)


TARGETS: Sequence[TargetKind] = (
    TargetKind("emulated", "edgekit.targets.local:from_profile", runs_here=True,
               where="emulated on this host: {reproduced}", representative_latency=False),
    TargetKind("ssh", "edgekit.targets.ssh:from_profile", check="edgekit.targets.sshconfig:parse_address"),
)


def _load(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def local_target() -> TargetKind:
    """The target that runs on this host (``--emulate``)."""
    return next(t for t in TARGETS if t.runs_here)


def target_for_address(address: str | None) -> TargetKind:
    """The target an address points to: by its ``scheme:`` prefix, else the default (SSH)."""
    if not address:
        raise UsageError("choose where to run: --emulate or --host [user@]addr[:port]", "pass exactly one of them")
    return _by_scheme(address)


def _by_scheme(address: str) -> TargetKind:
    for target in TARGETS:
        if target.scheme and address.startswith(target.scheme + ":"):
            return target
    return next(t for t in TARGETS if t.scheme is None and not t.runs_here)


def check_address(address: str) -> None:
    """Refuse a malformed address (before the export, not after it)."""
    _by_scheme(address).check_address(address)


def by_kind(kind: str) -> TargetKind | None:
    """The registered target reports call ``kind``; None for one this install does not know."""
    return next((t for t in TARGETS if t.kind == kind), None)


def where_text(kind: str, address: str, reproduced: Sequence[str]) -> str:
    """How a report names where a run happened: ``ssh pi@10.0.0.2:22``, ``emulated on this host: ...``."""
    target = by_kind(kind)
    template = target.where if target is not None else TargetKind.where
    return template.format(kind=kind, address=address, reproduced=", ".join(reproduced) or "no limits")


def representative_kind(kind: str) -> bool:
    """Whether latency measured on a target of this kind can stand for the device's."""
    target = by_kind(kind)
    return target.representative_latency if target is not None else True


__all__ = ["TARGETS", "TargetKind", "by_kind", "check_address", "local_target", "representative_kind",
           "target_for_address", "where_text"]
