"""Where the runner runs: this host under a profile's limits, or a device over SSH.

Target modules are imported lazily, so ``import edgekit`` never imports paramiko.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.targets.base import RunJob, RunResult, Target, TargetInfo

if TYPE_CHECKING:
    from edgekit.devices import DeviceProfile


def create_target(profile: "DeviceProfile", *, emulate: bool = False, host: str | None = None,
                  progress: Any = None, **ssh: Any) -> Target:
    """The emulated target for ``emulate``, else an SSH target for ``host`` with the profile's defaults.

    ``progress`` (an ``edgekit.report.progress.Progress``) shows the SSH target's file pushes.
    """
    if emulate:
        from edgekit.targets.emulated import EmulatedTarget

        return EmulatedTarget(name=profile.name, cores=profile.cpu.cores, memory_mib=profile.memory_mib,
                              threads=profile.threads, cpu_model=profile.cpu.model)
    from edgekit.targets.ssh import SSHTarget

    options = {"user": None, "port": None, "python": profile.ssh.python, "workdir": profile.ssh.workdir,
               "profile_name": profile.name, "memory_mib": profile.memory_mib, "default_user": profile.ssh.user,
               "default_port": profile.ssh.port, "progress": progress}
    options.update({k: v for k, v in ssh.items() if v is not None})
    return SSHTarget(host, **options)


__all__ = ["RunJob", "RunResult", "Target", "TargetInfo", "create_target"]
