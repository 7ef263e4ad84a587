"""The emulated target: the real runner in a fresh process under a profile's limits."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import (
    DataError,
    RemoteOutOfMemoryError,
    RemoteRuntimeMissingError,
    RunnerFailedError,
)
from edgekit.targets.base import RunJob, Target
from edgekit.targets.local import LocalTarget
from edgekit.targets.limits import cgroup_parent

# Models come from the runner tests' fixture module.
from tests.runtimes.conftest import (  # noqa: F401
    INPUT_SHAPE,
    alloc_onnx,
    models_dir,
    onnx_model,
    tiny_model,
)

HOST_CPUS = len(os.sched_getaffinity(0))
CGROUP_OK = cgroup_parent("memory") is not None
METHODS = [
    pytest.param("auto", marks=pytest.mark.skipif(not CGROUP_OK, reason="needs cgroup v1")),
    "process",
]


@pytest.fixture
def run_root(tmp_path, monkeypatch):
    """Every temp dir the target makes goes here, so the test can see it is gone afterwards."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def bench_job(model: Path, **extra) -> RunJob:
    job = {"schema_version": 1, "mode": "benchmark", "model": "model.onnx", "format": "onnx",
           "warmup": 1, "runs": 5}
    job.update(extra)
    return RunJob(job=job, files={"model.onnx": model})


@pytest.mark.parametrize("method", METHODS)
def test_runs_a_job_end_to_end_and_cleans_up(method, onnx_model, tiny_model, run_root,
                                             tmp_path):
    x = np.random.RandomState(5).standard_normal(INPUT_SHAPE).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    job = RunJob(
        job={"schema_version": 1, "mode": "benchmark", "model": "model.onnx", "format": "onnx",
             "warmup": 2, "runs": 9, "inputs": "inputs.npz", "save_outputs": "outputs.npz"},
        files={"model.onnx": onnx_model, "inputs.npz": tmp_path / "inputs.npz"},
        fetch=["outputs.npz"],
    )
    local = tmp_path / "local"
    with LocalTarget("pi4", cores=1, memory_mib=1024, threads=1, limits=method) as target:
        assert isinstance(target, Target)
        outcome = target.run(job, local)
    result = outcome.result
    assert result["ok"] and len(result["samples_ms"]) == 9
    assert result["runtime"]["threads"] == 1  # from the target, the job set none
    assert outcome.wall_s > 0
    assert outcome.files == {"outputs.npz": local / "outputs.npz"}
    with np.load(local / "outputs.npz") as saved:
        np.testing.assert_allclose(saved["logits"], tiny_model[1](x), atol=1e-4)
    assert os.listdir(run_root) == []  # the run directory is gone


@pytest.mark.skipif(HOST_CPUS < 2, reason="needs at least 2 CPUs")
@pytest.mark.parametrize("method", METHODS)
def test_runner_sees_only_the_profiles_cores(method, onnx_model, tmp_path):
    target = LocalTarget("one-core", cores=1, memory_mib=2048, limits=method)
    result = target.run(bench_job(onnx_model), tmp_path).result
    assert result["device"]["cores"] == 1
    assert result["runtime"]["threads"] == 1  # ORT default: the cores it may run on
    info = target.describe()
    assert any(text.startswith("1 core (CPUs ") for text in info.reproduced), info


def test_more_cores_than_the_host_is_reported_not_reproduced(onnx_model, tmp_path):
    target = LocalTarget("big", cores=HOST_CPUS + 2, memory_mib=512,
                            cpu_model="Broadcom BCM2711, 4x Cortex-A72", arch="aarch64")
    result = target.run(bench_job(onnx_model), tmp_path).result
    assert result["device"]["cores"] == HOST_CPUS
    info = target.describe()
    assert info.kind == "emulated" and info.address == "localhost"
    assert f"{HOST_CPUS} of {HOST_CPUS + 2} cores (this host has only {HOST_CPUS})" in (
        info.not_reproduced
    )
    assert any(t.startswith("memory capped at 512 MiB") for t in info.reproduced)
    latency = [t for t in info.not_reproduced if t.startswith("latency is this host's")]
    assert latency and "4x Cortex-A72 (aarch64)" in latency[0] and platform.machine() in latency[0]
    assert info.representative_latency is False


@pytest.mark.parametrize("method", METHODS)
def test_model_over_the_memory_cap_is_out_of_memory(method, alloc_onnx, tmp_path):
    target = LocalTarget("tiny-ram", memory_mib=160, limits=method)
    small = target.run(bench_job(alloc_onnx(8), runs=2), tmp_path).result  # control: fits
    assert small["ok"]
    with pytest.raises(RemoteOutOfMemoryError) as caught:
        target.run(bench_job(alloc_onnx(512), runs=2), tmp_path)
    assert "memory capped at 160 MiB" in str(caught.value)
    assert caught.value.hint


def test_allocation_refused_by_the_rlimit_backstop_is_out_of_memory(alloc_onnx, tmp_path):
    """Process limits: a huge allocation fails inside the runtime; the runner says so."""
    target = LocalTarget("tiny-ram", memory_mib=160, limits="process")
    over_backstop = target.plan.rlimit_as_bytes // 2**20 + 512  # fails at once, untouched
    with pytest.raises(RemoteOutOfMemoryError) as caught:
        target.run(bench_job(alloc_onnx(over_backstop), runs=1), tmp_path)
    message = str(caught.value)
    assert "memory capped at 160 MiB" in message and "out_of_memory" in message


def test_runner_that_dies_without_result_is_runner_failed(onnx_model, tmp_path):
    fake = tmp_path / "python-that-crashes"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'  # the limits bootstrap
        "echo 'Fatal Python error: Segmentation fault (simulated)' >&2\nexit 139\n"
    )
    fake.chmod(0o755)
    target = LocalTarget("crashy", python=str(fake), limits="process")
    with pytest.raises(RunnerFailedError) as caught:
        target.run(bench_job(onnx_model), tmp_path)
    message = str(caught.value)
    assert "exited with status 139 without writing result.json" in message
    assert "Segmentation fault (simulated)" in message


def test_timeout_is_runner_failed(onnx_model, tmp_path):
    target = LocalTarget("slow", timeout_s=1.0, limits="process")
    with pytest.raises(RunnerFailedError, match="did not finish within 1 s"):
        target.run(bench_job(onnx_model, runs=10**6, min_seconds=60), tmp_path)


def test_runner_errors_become_typed_errors(onnx_model, tmp_path):
    target = LocalTarget("pi", limits="process")
    np.savez(tmp_path / "bad.npz", y=np.zeros(3, np.float32))
    job = bench_job(onnx_model, inputs="bad.npz")
    job.files["bad.npz"] = tmp_path / "bad.npz"
    with pytest.raises(RunnerFailedError) as caught:
        target.run(job, tmp_path)
    assert caught.value.kind == "bad_input" and "missing ['x']" in str(caught.value)

    tflite_job = RunJob(
        job={"schema_version": 1, "model": "m.tflite", "format": "tflite",
             "runtimes": ["tflite_runtime"]},
        files={"m.tflite": onnx_model},
    )
    try:
        import tflite_runtime  # noqa: F401
    except ImportError:
        with pytest.raises(RemoteRuntimeMissingError):
            target.run(tflite_job, tmp_path)


def test_missing_job_file_and_escaping_names_are_refused(onnx_model, tmp_path, run_root):
    target = LocalTarget("pi", limits="process")
    with pytest.raises(DataError):
        target.run(RunJob(job={}, files={"model.onnx": tmp_path / "nope.onnx"}), tmp_path)
    with pytest.raises(ValueError):
        target.run(RunJob(job={}, files={"../evil.onnx": onnx_model}), tmp_path)
    assert os.listdir(run_root) == []


def test_evaluate_fetches_predictions(onnx_model, tiny_model, tmp_path):
    x = np.random.RandomState(2).standard_normal((6,) + INPUT_SHAPE[1:]).astype(np.float32)
    predicted = tiny_model[1](x).argmax(axis=1)
    np.savez(tmp_path / "eval.npz", x=x, y=predicted)
    job = RunJob(
        job={"schema_version": 1, "mode": "evaluate", "model": "model.onnx", "format": "onnx",
             "eval": {"data": "eval.npz", "batch": 4, "predictions": "pred.npy"}},
        files={"model.onnx": onnx_model, "eval.npz": tmp_path / "eval.npz"},
        fetch=["pred.npy"],
    )
    outcome = LocalTarget("pi", cores=1).run(job, tmp_path / "out")
    assert outcome.result["eval"]["accuracy"] == 1.0
    np.testing.assert_array_equal(np.load(outcome.files["pred.npy"]), predicted)


def test_probe_runs_under_the_limits():
    result = LocalTarget("pi", cores=1, memory_mib=1024).probe()
    assert result["ok"] and result["runtimes"]["onnxruntime"]["available"]
    assert result["device"]["cores"] == (1 if HOST_CPUS > 1 else HOST_CPUS)


def test_create_target_builds_it_from_a_profile():
    from edgekit import devices
    from edgekit.targets import create_target

    profile = devices.get("pi4")
    target = create_target(profile, emulate=True)
    assert isinstance(target, LocalTarget)
    assert (target.cores, target.memory_mib, target.threads) == (
        profile.cpu.cores, profile.memory_mib, profile.threads)
    latency = [t for t in target.describe().not_reproduced if t.startswith("latency")]
    assert "Cortex-A72" in latency[0]


def test_deploy_caps_the_profiles_threads_at_the_cores_this_host_gives(onnx_model):
    """pi4 asks for 4 threads; the runner gets at most the CPUs this process may use (a 2-core
    host: 2), and the report says why. The count checked is the one the runner reports using."""
    from edgekit import devices
    from edgekit.deploy import DeployOptions, deploy
    from edgekit.targets.limits import plan_limits

    profile = devices.get("pi4")
    usable = plan_limits(profile.cpu.cores, None).usable_cpus
    report = deploy(str(onnx_model), "pi4", DeployOptions(emulate=True, runs=3, warmup=1))
    assert report.runtime.threads <= HOST_CPUS
    assert report.runtime.threads == report.settings["threads"] == min(profile.threads, usable)
    capped = [n for n in report.notes if "inference thread" in n]
    if profile.threads > usable:
        assert capped == [f"{usable} inference thread{'s' if usable > 1 else ''}: the pi4 profile's "
                          f"{profile.threads}, capped at the {usable} core{'s' if usable > 1 else ''} "
                          "this host gives (--threads sets more)"]
    else:
        assert capped == []
    # what no emulated run reproduces is a detail: the report's warning already says so
    from edgekit.report.text import render_text

    generic = "the device's clock speed, caches, memory bandwidth, thermal throttling and power supply"
    assert generic in report.details and generic not in report.notes
    assert generic not in render_text(report) and generic in render_text(report, verbose=True)


def test_threads_set_by_the_user_are_not_capped_but_flagged(onnx_model):
    from edgekit.deploy import DeployOptions, deploy

    wanted = HOST_CPUS + 1
    report = deploy(str(onnx_model), "pi4", DeployOptions(emulate=True, runs=3, warmup=1, threads=wanted))
    assert report.runtime.threads == report.settings["threads"] == wanted
    crowded = [n for n in report.notes if "inference thread" in n]
    assert len(crowded) == 1 and crowded[0].startswith(f"{wanted} inference threads (set for the run) on ")
