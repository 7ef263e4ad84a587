"""Applying a profile's cores and memory to one child process (edgekit.targets.limits)."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest

from edgekit.targets import limits
from edgekit.targets.limits import LimitedProcess, parse_cpu_list, plan_limits

HOST_CPUS = sorted(os.sched_getaffinity(0))
CGROUP_OK = limits.cgroup_parent("memory") is not None and limits.cgroup_parent("cpuset") is not None
needs_cgroup = pytest.mark.skipif(not CGROUP_OK, reason="needs root and cgroup v1 cpuset+memory")
needs_two_cpus = pytest.mark.skipif(len(HOST_CPUS) < 2, reason="needs at least 2 CPUs")

REPORT = (
    "import os, sys; print(sorted(os.sched_getaffinity(0)));"
    "print(open('/proc/self/cgroup').read())"
)
HOG = "import time; data = b'x' * ({mib} << 20); print('allocated', flush=True); time.sleep(10)"


def run_child(plan, tmp_path: Path, code: str, timeout: float = 20.0):
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        with LimitedProcess(plan, "test", [sys.executable, "-c", code], tmp_path,
                            stdout, stderr) as child:
            child.wait(timeout)
            groups = dict(child.groups)
    return child, out.read_text(), err.read_text(), groups


def test_cpu_lists():
    assert parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6]
    assert parse_cpu_list("5") == [5]
    assert limits._format_cpus([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_process_plan():
    plan = plan_limits(1, 256, "process")
    expected = (HOST_CPUS[0],) if len(HOST_CPUS) > 1 else None
    assert plan.cpus == expected
    assert plan.memory_method == "rss-watch"
    per_core = len(plan.cpus or HOST_CPUS)
    assert plan.rlimit_as_bytes == (256 + 1024 + 128 * per_core) * 2**20
    assert "memory capped at 256 MiB by watching" in plan.describe_memory()
    assert not plan.cgroup_parents


def test_more_cores_than_the_host_has_is_not_restricted():
    plan = plan_limits(len(HOST_CPUS) + 2, None, "process")
    assert plan.cpus is None and plan.cpu_method is None
    assert plan.describe_cores() == (
        f"{len(HOST_CPUS)} of {len(HOST_CPUS) + 2} cores (this host has only {len(HOST_CPUS)})"
    )


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        plan_limits(-1, None, "process")
    with pytest.raises(ValueError):
        plan_limits(None, None, "magic")  # type: ignore[arg-type]


@needs_two_cpus
def test_affinity_is_applied_to_the_child(tmp_path):
    plan = plan_limits(1, None, "process")
    child, out, err, groups = run_child(plan, tmp_path, REPORT)
    assert child.returncode == 0, err
    assert out.splitlines()[0] == str([HOST_CPUS[0]])
    assert groups == {}


def test_rss_watch_kills_a_child_over_the_cap(tmp_path):
    plan = plan_limits(None, 64, "process")
    child, out, err, _ = run_child(plan, tmp_path, HOG.format(mib=200))
    assert child.returncode == -signal.SIGKILL
    assert child.oom_killed and "over the 64 MiB cap" in child.rss_violation
    assert child.peak_rss_kib > 64 * 1024


def test_rss_watch_leaves_a_child_under_the_cap_alone(tmp_path):
    plan = plan_limits(None, 256, "process")
    child, out, err, _ = run_child(plan, tmp_path, "data = b'x' * (20 << 20); print('ok')")
    assert child.returncode == 0 and out.strip() == "ok" and not child.oom_killed


@needs_cgroup
@needs_two_cpus
def test_cgroup_cpuset_and_memory_are_applied_and_removed(tmp_path):
    plan = plan_limits(1, 128, "auto")
    assert plan.cpu_method == "cgroup-cpuset" and plan.memory_method == "cgroup-memory"
    assert plan.describe_memory() == "memory capped at 128 MiB by cgroup v1"
    child, out, err, groups = run_child(plan, tmp_path, REPORT)
    assert child.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == str([plan.cpus[0]])
    for controller in ("memory", "cpuset"):
        group = groups[controller]
        assert any(
            controller in line.split(":")[1].split(",") and line.endswith("/" + group.name)
            for line in lines[1:] if line.count(":") >= 2
        ), out
        assert not group.exists()  # removed afterwards


@needs_cgroup
def test_cgroup_memory_limit_oom_kills(tmp_path):
    plan = plan_limits(None, 64, "cgroup")
    child, out, err, groups = run_child(plan, tmp_path, HOG.format(mib=200))
    assert child.returncode == -signal.SIGKILL
    assert child.oom_killed and child.oom_kills >= 1
    assert "allocated" not in out
    assert not groups["memory"].exists()


def test_timeout_kills_the_child(tmp_path):
    plan = plan_limits(None, None, "process")
    child, *_ = run_child(plan, tmp_path, "import time; time.sleep(30)", timeout=0.3)
    assert child.timed_out and child.returncode == -signal.SIGKILL


def test_cpu_quota_is_read_from_v1_and_v2_files(tmp_path):
    """The tightest quota along the cgroup chain counts; -1 (v1) and "max" (v2) mean none."""
    v1, v2, parent = tmp_path / "v1", tmp_path / "v2", tmp_path / "parent"
    for directory in (v1, v2, parent):
        directory.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v2 / "cpu.max").write_text("max 100000\n")
    assert limits.quota_in([v1, v2]) is None
    (v2 / "cpu.max").write_text("150000 100000\n")
    (parent / "cpu.cfs_quota_us").write_text("300000\n")
    (parent / "cpu.cfs_period_us").write_text("100000\n")
    assert limits.quota_in([v1, v2, parent]) == pytest.approx(1.5)


def test_usable_cpus_are_the_childs_cpus_capped_by_the_quota():
    plan = plan_limits(None, None, "process")
    assert plan.host_cpus == len(HOST_CPUS)
    if plan.cpu_quota is None:  # this host's own cgroups set no quota
        assert plan.usable_cpus == len(HOST_CPUS)
    quota = dataclasses.replace(plan, host_cpus=8, cpus=None, cpu_quota=1.5)
    assert quota.usable_cpus == 1
    assert quota.describe_usable() == "the 1 core a cgroup CPU quota of 1.5 CPUs allows"
    pinned = dataclasses.replace(plan, host_cpus=8, cpus=(0, 1, 2), cpu_quota=None)
    assert pinned.usable_cpus == 3
    assert dataclasses.replace(plan, host_cpus=2, cpus=None, cpu_quota=None).describe_usable() == (
        "the 2 cores this host gives")
