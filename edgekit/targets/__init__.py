"""Where the runner runs: this host under a profile's limits, or a device over SSH.

The targets are listed in :mod:`edgekit.targets.registry`; their modules are imported lazily,
so ``import edgekit`` never imports paramiko.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from edgekit.targets.base import DeviceShell, RunJob, RunResult, Target, TargetInfo
from edgekit.targets.registry import local_target, target_for_address
from edgekit.targets.ssh_options import SSHOptions

if TYPE_CHECKING:
    from edgekit.devices import DeviceProfile


def create_target(profile: "DeviceProfile", *, emulate: bool = False, host: str | None = None,
                  progress: Any = None, ssh: SSHOptions | Mapping[str, Any] | None = None) -> Target:
    """The target ``emulate`` (this host) or ``host`` (an address) points to, with the profile's defaults.

    ``ssh`` (:class:`SSHOptions`) says how to reach a device; ``progress`` (an
    ``edgekit.report.progress.Progress``) shows the target's file pushes.
    """
    kind = local_target() if emulate else target_for_address(host)
    return kind.build(profile, host, SSHOptions.coerce(ssh), progress)


__all__ = ["DeviceShell", "RunJob", "RunResult", "SSHOptions", "Target", "TargetInfo", "create_target"]
