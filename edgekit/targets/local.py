"""The local target (``edgekit deploy --emulate``): the runner on this host, in a fresh process,
under a profile's limits.

Not to be confused with ``edgekit emulator`` (:mod:`edgekit.emulator`): a qemu aarch64 device
reached over SSH, that is, an SSH target. Reports call this one "emulated" (its
``TargetInfo.kind``), as they always have.

It runs exactly what a device runs (``runtimes/edgekit_runner.py`` on the same ``job.json``),
with the profile's core count and memory applied by :mod:`edgekit.targets.limits`. What that
reproduces of the device, and what it cannot (the device's CPU speed above all), is spelled
out by :meth:`LocalTarget.describe` and shown in every report.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from edgekit.errors import DataError, RemoteOutOfMemoryError, RunnerFailedError
from edgekit.notes import detail
from edgekit.outputs import write_json_atomic
from edgekit.resources import RUNNER_NAME, runner_module, runner_path
from edgekit.targets.base import RunJob, RunResult, Target, TargetInfo, parse_result
from edgekit.targets.limits import LimitedProcess, LimitPlan, Method, plan_limits

if TYPE_CHECKING:
    from edgekit.devices import DeviceProfile

STDERR_TAIL_LINES = 25
OOM_HINT = (
    "the model needs more memory than the device has: use a smaller or int8 artifact, "
    "a smaller batch, or a profile with more memory"
)


def _tail(path: Path, lines: int = STDERR_TAIL_LINES, max_bytes: int = 8192) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _inside(run_dir: Path, name: str) -> Path:
    """``run_dir / name`` for a relative name that stays inside the run directory."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise ValueError(f"run directory file names must be relative and inside it: {name!r}")
    return run_dir.joinpath(*pure.parts)


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class LocalTarget(Target):
    """This host standing in for a device with ``cores`` cores and ``memory_mib`` MiB.

    Args:
        name: the profile's name (for messages and cgroup names).
        cores: the device's core count; the runner is pinned to that many CPUs.
        memory_mib: the device's memory; the runner is capped at that.
        threads: inference threads used when a job does not set ``threads`` (the profile's),
            capped at the CPUs the runner may use here (:meth:`inference_threads`): more
            threads than cores only time-slice, which makes the latency's tail noise.
        cpu_model: the device's CPU (the profile's ``cpu.model``, e.g. "Broadcom BCM2711,
            4x Cortex-A72"), arch: its ``uname -m`` (the profile's ``arch``, e.g. "aarch64"),
            both only for the honest description of what is not reproduced.
        python: interpreter that runs the runner (needs numpy and the runtime).
        limits: "auto" (cgroup v1 when root, else process limits), "cgroup", or "process".
        timeout_s: a run taking longer is killed and reported as failed.
    """

    kind = "emulated"  # the report's name for it (TargetInfo.kind), kept as it was

    def __init__(
        self,
        name: str = "emulated",
        cores: int | None = None,
        memory_mib: int | None = None,
        threads: int | None = None,
        *,
        cpu_model: str | None = None,
        arch: str | None = None,
        python: str = sys.executable,
        limits: Method = "auto",
        timeout_s: float | None = 1800.0,
    ) -> None:
        self.name = name
        self.cores = cores
        self.memory_mib = memory_mib
        self.threads = threads
        self.cpu_model = cpu_model
        self.arch = arch
        self.python = python
        self.limits = limits
        self.timeout_s = timeout_s
        self._plan: LimitPlan | None = None
        self._where = f"emulated target {name!r}"
        self._default_threads_used = False  # a job ran with the target's (capped) default
        self._job_threads: set[int] = set()  # thread counts jobs set themselves

    def inference_threads(self, wanted: int | None) -> int | None:
        """``wanted`` (the profile's threads), at most the CPUs the runner can use on this host."""
        self._default_threads_used = True
        if not wanted:
            return wanted
        return min(wanted, self.plan.usable_cpus)

    # -- Target ---------------------------------------------------------------------------------

    def open(self) -> None:
        if self._plan is None:
            if not runner_path().is_file():
                raise RunnerFailedError(f"the runner is missing: {runner_path()}")
            self._plan = plan_limits(self.cores, self.memory_mib, self.limits)

    def close(self) -> None:
        """Nothing to release: every run removes its directory and cgroups itself."""

    @property
    def plan(self) -> LimitPlan:
        self.open()
        assert self._plan is not None
        return self._plan

    def describe(self) -> TargetInfo:
        plan = self.plan
        host = runner_module().device_facts()
        host_arch = host.get("machine") or platform.machine()
        host_cpu = host.get("cpu_model") or "unknown CPU"
        reproduced: list[str] = []
        not_reproduced: list[str] = []

        cores_text = plan.describe_cores()
        if plan.cores and plan.cores > plan.host_cpus:
            not_reproduced.append(cores_text)
        elif plan.cores:
            reproduced.append(cores_text)
        memory_text = plan.describe_memory()
        if plan.memory_mib and plan.host_memory_mib and plan.memory_mib > plan.host_memory_mib:
            not_reproduced.append(
                f"{plan.memory_mib} MiB of memory: this host has only {plan.host_memory_mib} MiB"
            )
        elif plan.memory_mib:
            reproduced.append(memory_text)
        self._describe_threads(plan, reproduced, not_reproduced)

        same_arch = self.arch is None or self.arch == host_arch
        same_cpu = bool(self.cpu_model) and (
            self.cpu_model.lower() in host_cpu.lower() or host_cpu.lower() in self.cpu_model.lower()
        )
        representative = same_arch and same_cpu
        if not representative:
            device_cpu = self.cpu_model or "CPU"
            device_arch = f" ({self.arch})" if self.arch and not same_arch else ""
            not_reproduced.append(
                f"latency is this host's {host_arch} CPU ({host_cpu}), not the device's "
                f"{device_cpu}{device_arch}"
            )
        # true of every emulated run, and the report's warning already says the latency is not
        # the device's: shown with --verbose
        not_reproduced.append(detail(
            "the device's clock speed, caches, memory bandwidth, thermal throttling and power supply"
        ))
        not_reproduced.append(detail(
            f"the device's OS, Python and runtime builds (this host's Python "
            f"{platform.python_version()} and installed runtimes run the model)"
        ))
        return TargetInfo(
            kind=self.kind,
            address="localhost",
            reproduced=reproduced,
            not_reproduced=not_reproduced,
            representative_latency=representative,
        )

    def _describe_threads(self, plan: LimitPlan, reproduced: list[str], not_reproduced: list[str]) -> None:
        usable = plan.usable_cpus
        if self.threads and (self._default_threads_used or not self._job_threads):
            if self.threads > usable:
                not_reproduced.append(
                    f"{usable} inference thread{'s' if usable > 1 else ''}: the {self.name} profile's "
                    f"{self.threads}, capped at {plan.describe_usable()} (--threads sets more)"
                )
            else:
                reproduced.append(f"{self.threads} inference threads unless the job sets its own")
        crowded = [n for n in sorted(self._job_threads) if n > usable]
        if crowded:
            not_reproduced.append(
                f"{crowded[-1]} inference threads (set for the run) on {plan.describe_usable()}: "
                "threads share cores, so the latency's tail is noise"
            )

    def run(self, job: RunJob, local_dir: Path) -> RunResult:
        return self._run(job, Path(local_dir), probe=False)

    def probe(self) -> dict[str, Any]:
        """The runner's ``--probe`` result (device facts, importable runtimes) under the limits."""
        return self._run(RunJob(job={}, files={}), None, probe=True).result

    # -- internals ------------------------------------------------------------------------------

    def _run(self, job: RunJob, local_dir: Path | None, probe: bool) -> RunResult:
        plan = self.plan
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="edgekit-run-"))  # mode 0700
        try:
            run_dir = tmp / "run"
            run_dir.mkdir(mode=0o700)
            os.chmod(run_dir, 0o700)
            shutil.copy2(runner_path(), run_dir / RUNNER_NAME)
            argv = [self.python, str(run_dir / RUNNER_NAME)]
            if probe:
                argv.append("--probe")
            else:
                for name, source in job.files.items():
                    dest = _inside(run_dir, name)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        shutil.copy2(source, dest)
                    except FileNotFoundError as exc:
                        raise DataError(f"a file the job needs is missing: {source}") from exc
                body = dict(job.job)
                if body.get("threads") is None and self.threads:
                    body["threads"] = self.inference_threads(self.threads)
                elif body.get("threads") is not None:
                    self._job_threads.add(int(body["threads"]))
                write_json_atomic(run_dir / "job.json", body)
            argv.append(str(run_dir))

            stdout_path, stderr_path = tmp / "stdout.txt", tmp / "stderr.txt"
            with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
                with LimitedProcess(
                    plan, self.name, argv, cwd=run_dir, stdout=out, stderr=err, python=self.python
                ) as child:
                    child.wait(self.timeout_s)
            result = self._outcome(child, run_dir / "result.json", stderr_path)

            files: dict[str, Path] = {}
            if local_dir is not None and job.fetch:
                local_dir.mkdir(parents=True, exist_ok=True)
                for name in job.fetch:
                    source = _inside(run_dir, name)
                    if not source.is_file():
                        raise RunnerFailedError(
                            f"the runner on {self._where} did not write {name}",
                            kind="internal",
                        )
                    dest = _inside(local_dir, name)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, dest)
                    files[name] = dest
            return RunResult(result=result, files=files, wall_s=time.monotonic() - started)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _oom(self, detail: str) -> RemoteOutOfMemoryError:
        plan = self.plan
        how = "cgroup v1" if plan.memory_method == "cgroup-memory" else "a resident-set watch"
        return RemoteOutOfMemoryError(
            f"the runner on {self._where} ran out of memory: memory capped at "
            f"{plan.memory_mib} MiB by {how}; {detail}",
            OOM_HINT,
        )

    def _outcome(self, child: LimitedProcess, result_path: Path, stderr_path: Path) -> dict[str, Any]:
        plan = self.plan
        if child.timed_out:
            raise RunnerFailedError(
                f"the runner on {self._where} did not finish within {self.timeout_s:g} s and was "
                f"killed; its stderr ends with:\n{_tail(stderr_path)}",
                "raise the timeout, or lower runs/min_seconds",
            )
        if child.oom_killed:
            if child.rss_violation:
                detail = f"it was killed when its {child.rss_violation}"
            else:
                peak = (child.cgroup_max_usage_bytes or 0) // 2**20
                detail = f"the kernel's OOM killer ended it (cgroup peak usage {peak} MiB)"
            raise self._oom(detail)
        if not result_path.is_file():
            code = child.returncode
            how = (
                f"was killed by {_signal_name(code)}"
                if code is not None and code < 0
                else f"exited with status {code}"
            )
            raise RunnerFailedError(
                f"the runner on {self._where} {how} without writing result.json; "
                f"its stderr ends with:\n{_tail(stderr_path)}",
            )
        try:
            result = parse_result(result_path.read_bytes(), self._where)
        except RunnerFailedError as exc:
            if exc.kind == "out_of_memory":
                raise self._oom(f"the runner reported: {exc.message}") from exc
            raise
        if plan.memory_method == "rss-watch" and plan.memory_mib:
            peak = (result.get("memory") or {}).get("peak_rss_kib") or 0
            if peak > plan.memory_mib * 1024:
                raise self._oom(
                    f"its peak resident set was {peak // 1024} MiB, which a device with that "
                    "much memory could not hold"
                )
        return result


def from_profile(profile: "DeviceProfile", address: str | None = None, options: Any = None,
                 progress: Any = None) -> LocalTarget:
    """This host under ``profile``'s limits (the registry's factory; no address, no SSH options)."""
    return LocalTarget(name=profile.name, cores=profile.cpu.cores, memory_mib=profile.memory_mib,
                       threads=profile.threads, cpu_model=profile.cpu.model)
