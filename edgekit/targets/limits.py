"""Run one child process (the runner) under a device profile's cores and memory.

Two ways, picked per run by :func:`plan_limits`:

``cgroup`` (preferred; needs root and cgroup v1 ``cpuset``/``memory`` controllers)
    A fresh cgroup per run, created *below this process's own cgroup* (so any limit the host
    itself runs under still applies): ``cpuset.cpus`` pins the child to N CPUs and
    ``memory.limit_in_bytes`` (plus ``memory.memsw.limit_in_bytes`` where swap accounting
    exists) caps its memory. Over the cap the kernel's OOM killer kills the child (SIGKILL),
    as on a device. The cgroup is removed after the child exits.

``process`` (fallback: not root, or no cgroup v1)
    CPUs with ``os.sched_setaffinity`` (what ``taskset`` does). Memory is watched, not
    enforced by the kernel: the child's resident set (``VmRSS``) is polled every 20 ms and the
    child is killed when it passes the cap, and the runner's own peak (``VmHWM``) is checked
    afterwards (see LocalTarget), so a short spike between two polls is still caught.
    ``RLIMIT_AS`` is set only as a backstop against runaway allocations, well above the cap:
    it limits *virtual* memory, and onnxruntime/TFLite reserve far more address space than they
    touch (a 2-thread ORT session: ~330 MiB virtual for ~70 MiB resident; glibc reserves a
    64 MiB malloc arena per thread). An RLIMIT_AS equal to the cap would fail imports and
    thread creation long before the model used that much memory, which is not what a device
    with that much RAM does. Backstop = cap + 1 GiB + 128 MiB per core.

The limits are applied by a tiny bootstrap (``python -c``) that joins the cgroups / sets the
affinity and rlimit on itself and then ``exec``s the runner, so the runner starts as a fresh
process already inside its limits, and no Python code runs between ``fork`` and ``exec`` in
this (multi-threaded) process.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Sequence

from edgekit.errors import TargetError
from edgekit.resources import LIMITS_BOOTSTRAP_NAME, program_text

Method = Literal["auto", "cgroup", "process"]

POLL_S = 0.02
BACKSTOP_BASE_MIB = 1024
BACKSTOP_PER_CORE_MIB = 128

# The child's first moments (runtimes/limits_bootstrap.py): enter the cgroups, pin the CPUs,
# set the address-space backstop, then exec the runner. argv[1]: that config as JSON.
_BOOTSTRAP = program_text(LIMITS_BOOTSTRAP_NAME)


@dataclass(frozen=True)
class LimitPlan:
    """What will be applied to the child, and how."""

    cores: int | None  # cores the profile asks for
    cpus: tuple[int, ...] | None  # CPUs the child gets (None: no restriction)
    cpu_method: str | None  # "cgroup-cpuset" | "affinity" | None
    memory_mib: int | None
    memory_method: str | None  # "cgroup-memory" | "rss-watch" | None
    rlimit_as_bytes: int | None  # backstop of the rss-watch method
    host_cpus: int  # CPUs this process may use
    host_memory_mib: int | None
    cgroup_parents: dict[str, Path]  # controller -> directory the per-run cgroup goes under
    method: str = "auto"  # what was asked for: "auto" | "cgroup" | "process"
    cpu_quota: float | None = None  # CPUs' worth of time this process's cgroups allow (None: no quota)

    @property
    def usable_cpus(self) -> int:
        """CPUs the child can keep busy at once: its own CPUs, capped by a cgroup CPU quota."""
        count = len(self.cpus) if self.cpus else self.host_cpus
        if self.cpu_quota:
            # floor: a thread more than the quota allows is throttled every period (a noisy tail)
            count = min(count, max(1, math.floor(self.cpu_quota)))
        return max(1, count)

    def describe_usable(self) -> str:
        """``"the 2 cores this host gives"``: where ``usable_cpus`` comes from, for reports."""
        usable = self.usable_cpus
        if self.cpu_quota and usable < (len(self.cpus) if self.cpus else self.host_cpus):
            return f"the {_cores(usable)} a cgroup CPU quota of {self.cpu_quota:g} CPUs allows"
        if self.cpus:
            return f"the {_cores(usable)} the runner is pinned to"
        return f"the {_cores(usable)} this host gives"

    def describe_cores(self) -> str:
        if not self.cores:
            return f"all {self.host_cpus} CPUs of this host (the profile sets no core count)"
        if self.cpus:
            how = "a cgroup v1 cpuset" if self.cpu_method == "cgroup-cpuset" else "CPU affinity"
            return (
                f"{_cores(self.cores)} (CPUs {_format_cpus(self.cpus)}, pinned by {how}; "
                f"this host has {self.host_cpus})"
            )
        if self.cores > self.host_cpus:
            return f"{self.host_cpus} of {self.cores} cores (this host has only {self.host_cpus})"
        return f"{_cores(self.cores)} (all of this host's CPUs)"

    def describe_memory(self) -> str:
        if not self.memory_mib:
            return "memory not capped (the profile sets none)"
        if self.memory_method == "cgroup-memory":
            return f"memory capped at {self.memory_mib} MiB by cgroup v1"
        backstop = (self.rlimit_as_bytes or 0) // 2**20
        why = "process limits asked for" if self.method == "process" else "no usable cgroup v1"
        return (
            f"memory capped at {self.memory_mib} MiB by watching the runner's resident set "
            f"({why}; RLIMIT_AS {backstop} MiB as a backstop)"
        )


def _cores(n: int) -> str:
    return f"{n} core" if n == 1 else f"{n} cores"


def _format_cpus(cpus: Sequence[int]) -> str:
    ranges: list[str] = []
    start = prev = None
    for cpu in sorted(cpus):
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            ranges.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = cpu
    if start is not None:
        ranges.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(ranges)


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,6"`` -> ``[0, 1, 2, 3, 6]``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def host_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def host_memory_mib() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) // 1024 if match else None


def _mounts() -> list[tuple[list[str], list[str]]]:
    """/proc/self/mountinfo as (fields before " - ", fields after it); empty when unreadable."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        if sep:
            out.append((left.split(), right.split()))
    return out


def _v1_mount(controller: str) -> tuple[Path, str] | None:
    """(mount point, mount root) of the cgroup v1 hierarchy holding ``controller``."""
    for fields, tail in _mounts():
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] == "cgroup" and controller in tail[2].split(","):
            return Path(fields[4]), fields[3]
    return None


def _own_cgroup(controller: str) -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2]
    return None


def _v2_mount() -> tuple[Path, str] | None:
    """(mount point, mount root) of the cgroup v2 hierarchy, when one is mounted."""
    for fields, tail in _mounts():
        if len(fields) >= 5 and tail and tail[0] == "cgroup2":
            return Path(fields[4]), fields[3]
    return None


def _own_cgroup_v2() -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::")), None)


def _cgroup_chain(mount: tuple[Path, str], own: str) -> list[Path]:
    """This process's cgroup directory in ``mount`` and every ancestor up to the mount point."""
    mount_point, mount_root = mount
    if mount_root != "/" and own.startswith(mount_root):
        own = own[len(mount_root) :]
    parts = [p for p in own.split("/") if p]
    return [mount_point.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def quota_in(directories: Sequence[Path]) -> float | None:
    """The tightest CPU quota (in CPUs) set in these cgroup directories (v1 or v2 files)."""
    quotas: list[float] = []
    for directory in directories:
        v2 = _read_words(directory / "cpu.max")  # "max 100000" or "150000 100000"
        if len(v2) == 2 and v2[0] != "max" and v2[0].isdigit() and v2[1].isdigit() and int(v2[1]):
            quotas.append(int(v2[0]) / int(v2[1]))
        quota, period = _read_words(directory / "cpu.cfs_quota_us"), _read_words(directory / "cpu.cfs_period_us")
        if quota and period and quota[0].lstrip("-").isdigit() and period[0].isdigit():
            if int(quota[0]) > 0 and int(period[0]) > 0:  # -1: no quota
                quotas.append(int(quota[0]) / int(period[0]))
    return min(quotas) if quotas else None


def cpu_quota() -> float | None:
    """CPUs' worth of time this process may use under its cgroups' CFS quotas (None: unlimited).

    Affinity says which CPUs a process may run on; a quota (``docker --cpus``, a Kubernetes
    CPU limit) says how much of them it may use, and more threads than that are throttled.
    """
    directories: list[Path] = []
    v1, own_v1 = _v1_mount("cpu"), _own_cgroup("cpu")
    if v1 is not None and own_v1 is not None:
        directories += _cgroup_chain(v1, own_v1)
    v2, own_v2 = _v2_mount(), _own_cgroup_v2()
    if v2 is not None and own_v2 is not None:
        directories += _cgroup_chain(v2, own_v2)
    return quota_in(directories)


def cgroup_parent(controller: str) -> Path | None:
    """This process's own cgroup v1 directory for ``controller`` if we may create groups in it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    mount = _v1_mount(controller)
    own = _own_cgroup(controller)
    if mount is None or own is None:
        return None
    mount_point, mount_root = mount
    if mount_root != "/" and own.startswith(mount_root):
        own = own[len(mount_root) :]
    directory = mount_point / own.lstrip("/")
    probe = {"memory": "memory.limit_in_bytes", "cpuset": "cpuset.cpus"}[controller]
    if not (directory / probe).exists() or not os.access(directory, os.W_OK):
        return None
    return directory


def plan_limits(cores: int | None, memory_mib: int | None, method: Method = "auto") -> LimitPlan:
    """Decide how ``cores`` and ``memory_mib`` will be applied on this host."""
    if method not in ("auto", "cgroup", "process"):
        raise ValueError(f"unknown limits method {method!r}")
    allowed = host_cpus()
    parents: dict[str, Path] = {}
    if method != "process":
        for controller, wanted in (("cpuset", cores), ("memory", memory_mib)):
            if not wanted:
                continue
            parent = cgroup_parent(controller)
            if parent is not None:
                parents[controller] = parent
            elif method == "cgroup":
                raise TargetError(
                    f"cannot use a cgroup v1 {controller} group on this host",
                    "run as root on a host with cgroup v1 controllers mounted, or use limits='auto'",
                )

    cpus: tuple[int, ...] | None = None
    cpu_method = None
    if cores:
        if cores < 1:
            raise ValueError("cores must be >= 1")
        candidates = allowed
        if "cpuset" in parents:
            try:
                permitted = set(parse_cpu_list((parents["cpuset"] / "cpuset.cpus").read_text()))
                candidates = [c for c in allowed if c in permitted] or allowed
            except (OSError, ValueError):
                pass
        if cores < len(candidates):
            cpus = tuple(candidates[:cores])
            cpu_method = "cgroup-cpuset" if "cpuset" in parents else "affinity"
        else:
            parents.pop("cpuset", None)  # nothing to restrict: the child gets every CPU we have
    else:
        parents.pop("cpuset", None)

    memory_method = None
    backstop = None
    if memory_mib:
        if memory_mib < 1:
            raise ValueError("memory_mib must be >= 1")
        if "memory" in parents:
            memory_method = "cgroup-memory"
        else:
            memory_method = "rss-watch"
            per_core = len(cpus) if cpus else len(allowed)
            backstop = (memory_mib + BACKSTOP_BASE_MIB + BACKSTOP_PER_CORE_MIB * per_core) * 2**20
    return LimitPlan(
        cores=cores,
        cpus=cpus,
        cpu_method=cpu_method,
        memory_mib=memory_mib,
        memory_method=memory_method,
        rlimit_as_bytes=backstop,
        host_cpus=len(allowed),
        host_memory_mib=host_memory_mib(),
        cgroup_parents=parents,
        method=method,
        cpu_quota=cpu_quota(),
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40] or "target"


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _rss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else None


class LimitedProcess:
    """One child started under a :class:`LimitPlan`. Use as a context manager.

    ``__enter__`` creates the cgroups and starts the child; ``wait`` watches it;
    ``__exit__`` kills it if still running and removes the cgroups on every path.
    """

    def __init__(
        self,
        plan: LimitPlan,
        name: str,
        argv: Sequence[str],
        cwd: Path,
        stdout: IO[bytes],
        stderr: IO[bytes],
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.plan = plan
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.stdout = stdout
        self.stderr = stderr
        self.env = env
        self.python = python or sys.executable
        self.groups: dict[str, Path] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.timed_out = False
        self.rss_violation: str | None = None  # set when the rss-watch method killed the child
        self.peak_rss_kib = 0  # highest VmRSS seen by polling (rss-watch only)
        self.oom_kills = 0  # cgroup memory.oom_control oom_kill count
        self.cgroup_max_usage_bytes: int | None = None
        self.cgroup_failcnt = 0

    # -- cgroups --------------------------------------------------------------------------------

    def _make_groups(self) -> None:
        tag = f"edgekit-{_safe_name(self.name)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        plan = self.plan
        if plan.cpu_method == "cgroup-cpuset" and plan.cpus:
            parent = plan.cgroup_parents["cpuset"]
            group = parent / tag
            group.mkdir()
            self.groups["cpuset"] = group
            _write(group / "cpuset.cpus", _format_cpus(plan.cpus))
            _write(group / "cpuset.mems", (parent / "cpuset.mems").read_text().strip())
        if plan.memory_method == "cgroup-memory" and plan.memory_mib:
            group = plan.cgroup_parents["memory"] / tag
            group.mkdir()
            self.groups["memory"] = group
            limit = str(plan.memory_mib * 2**20)
            _write(group / "memory.limit_in_bytes", limit)
            memsw = group / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # no escape into swap either
                try:
                    _write(memsw, limit)
                except OSError:
                    pass

    def _read_memory_stats(self) -> None:
        group = self.groups.get("memory")
        if group is None:
            return
        try:
            text = (group / "memory.oom_control").read_text()
            match = re.search(r"^oom_kill\s+(\d+)", text, re.M)
            self.oom_kills = int(match.group(1)) if match else 0
        except OSError:
            pass
        try:
            self.cgroup_max_usage_bytes = int((group / "memory.max_usage_in_bytes").read_text())
            self.cgroup_failcnt = int((group / "memory.failcnt").read_text())
        except (OSError, ValueError):
            pass

    def _remove_groups(self) -> None:
        for group in self.groups.values():
            for attempt in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # Something the runner started is still inside: it is ours, end it.
                    try:
                        pids = (group / "cgroup.procs").read_text().split()
                    except OSError:
                        pids = []
                    for pid in pids:
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except (OSError, ValueError):
                            pass
                    time.sleep(0.02)
        self.groups = {}

    # -- the child ------------------------------------------------------------------------------

    def __enter__(self) -> "LimitedProcess":
        try:
            self._make_groups()
            config = {
                "cgroup_procs": [str(g / "cgroup.procs") for g in self.groups.values()],
                "cpus": list(self.plan.cpus) if self.plan.cpu_method == "affinity" else None,
                "rlimit_as": self.plan.rlimit_as_bytes,
            }
            command = [self.python, "-c", _BOOTSTRAP, json.dumps(config), *self.argv]
            self.proc = subprocess.Popen(
                command,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=self.stderr,
                env=self.env,
            )
        except BaseException:
            self._remove_groups()
            raise
        return self

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the child, enforcing the rss-watch cap and the timeout."""
        assert self.proc is not None
        proc = self.proc
        watch = self.plan.memory_method == "rss-watch" and self.plan.memory_mib
        cap_kib = (self.plan.memory_mib or 0) * 1024
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poll = POLL_S if watch else 0.2
        while True:
            try:
                self.returncode = proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                pass
            if watch:
                rss = _rss_kib(proc.pid)
                if rss is not None:
                    self.peak_rss_kib = max(self.peak_rss_kib, rss)
                    if rss > cap_kib:
                        self.rss_violation = (
                            f"resident set reached {rss // 1024} MiB, over the "
                            f"{self.plan.memory_mib} MiB cap"
                        )
                        proc.kill()
            if deadline is not None and time.monotonic() > deadline:
                self.timed_out = True
                proc.kill()
        self._read_memory_stats()
        return self.returncode

    @property
    def oom_killed(self) -> bool:
        """The child was killed for using more memory than the cap."""
        if self.rss_violation:
            return True
        killed = self.returncode is not None and self.returncode == -signal.SIGKILL
        return killed and (self.oom_kills > 0 or self.cgroup_failcnt > 0)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            self._remove_groups()
