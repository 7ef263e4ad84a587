"""The emulated Raspberry Pi 4 (qemu-user aarch64 + real sshd), end to end over SSH.

What a real Pi catches and an x86 laptop does not: the aarch64 runtime wheels, the device's
Python and distro numpy, the runner on the device's standard library, a non-root user's paths
and permissions. Latency under qemu means nothing, so these tests check behaviour only: the
device is aarch64, doctor sees the missing runtime, provision installs it from wheels
downloaded on the host, and deploy's outputs and accuracy on the device match the host's.

Everything here uses one session device (``tests/fixtures/emulated_pi.py``). Under qemu code
runs hundreds of times slower: deploys use few timed runs, one thread and 1,000 images.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.emulated_pi import DEVICE, run_cli

# the first test to use the device may build its root filesystem (3-6 min on a busy 2-core machine)
pytestmark = [pytest.mark.slow, pytest.mark.emulator, pytest.mark.timeout(1800)]

EVAL_LIMIT = 1000


def test_device_is_aarch64_with_the_profiles_python_and_a_normal_user(emulated_pi):
    from edgekit.devices import get

    profile = get(DEVICE)
    status, out, err = emulated_pi.sh(
        "uname -m; id -un; id -u; echo $HOME; "
        "python3 -c 'import platform, numpy; print(platform.python_version(), numpy.__version__)'; "
        "touch /etc/edgekit-test 2>/dev/null && echo root-writable || echo etc-read-only; "
        "echo \"cpu=$QEMU_CPU\""
    )
    assert status == 0, err
    machine, user, uid, home, versions, etc, cpu = out.split("\n")[:7]
    assert machine == "aarch64"
    assert user == profile.ssh.user == "pi" and uid != "0"
    assert home == "/home/pi"
    python, numpy_version = versions.split()
    assert python == profile.python  # 3.11.2, Raspberry Pi OS bookworm's
    assert numpy_version.startswith("1.")  # the distro's numpy 1.24, not the host's 2.x
    assert etc == "etc-read-only"  # a non-root user, like on the device
    # qemu emulates the Pi 4's Cortex-A72, not its default "max" CPU (SME etc.): runtimes must
    # pick the board's kernels (with "max", XNNPACK's int8 kernels gave 9.5% accuracy)
    assert cpu == "cpu=cortex-a72" and emulated_pi.state.qemu_cpu == "cortex-a72"


def test_runner_probe_reports_qemu(emulated_pi):
    with emulated_pi.target() as target:
        facts = target.probe()
    device = facts["device"]
    assert device["machine"] == "aarch64"
    assert device["emulated_by"] == "qemu", device
    assert not any(entry["available"] for entry in facts["runtimes"].values())  # nothing installed yet


def test_status_from_another_process(emulated_pi):
    done = run_cli("emulator", "status", emulated_pi.state.name, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["running"] and status["ssh_ready"]
    assert status["port"] == emulated_pi.state.port
    assert status["address"] == emulated_pi.host
    known_hosts = Path(status["known_hosts"]).read_text()
    assert known_hosts.startswith(f"[127.0.0.1]:{status['port']} ssh-ed25519 ")


def test_memory_limit_of_the_profile(emulated_pi):
    from edgekit.devices import get

    state = emulated_pi.state
    if state.cgroup is None:
        pytest.skip("no cgroup v1 memory controller on this host: " + "; ".join(state.notes))
    limit = int(Path(state.cgroup, "memory.limit_in_bytes").read_text())
    assert limit == get(DEVICE).memory_mib * 1024 * 1024
    assert str(state.pid) in Path(state.cgroup, "cgroup.procs").read_text().split()


def test_doctor_reports_the_missing_runtime(provisioned_pi):
    before = provisioned_pi.doctor_before
    checks = {c["name"]: c for c in before["checks"]}
    assert before["ok"] is False
    for fmt in ("onnx", "tflite"):
        check = checks[f"runtime {fmt}"]
        assert check["status"] == "fail", check
        assert "missing" in check["detail"]
        assert "edgekit provision --device pi4" in check["fix"]
    assert checks["python"]["status"] == "ok" and checks["arch"]["status"] == "ok"
    assert checks["numpy"]["status"] == "ok" and "the device's" in checks["numpy"]["detail"]
    assert checks["emulation"]["detail"].startswith("runs under qemu")
    assert provisioned_pi.doctor_before_rc == 1  # the CLI fails while a runtime is missing
    assert "FAIL" in provisioned_pi.doctor_before_text and "edgekit provision" in provisioned_pi.doctor_before_text


def test_provision_installs_the_runtimes_from_host_wheels(provisioned_pi):
    from importlib.metadata import version

    from edgekit.provision import wheel_cache_dir

    result = provisioned_pi.provision
    packages = {p["name"]: p for p in result["packages"]}
    # pinned to what this host validated with
    assert packages["onnxruntime"]["version"] == version("onnxruntime").split("+")[0]
    assert packages["ai-edge-litert"]["version"] == version("ai-edge-litert").split("+")[0]
    assert all("aarch64" in p["wheel"] or p["wheel"].endswith("-any.whl") for p in packages.values())
    assert "numpy" not in packages and result["provided_by_device"]["numpy"].startswith("1.")
    assert result["site_dir"] == "/home/pi/.local/lib/edgekit-site"
    for name in ("onnxruntime", "ai_edge_litert"):
        assert result["runtimes"][name]["available"], result["runtimes"][name]
    cache = wheel_cache_dir() / result["platform"]
    assert all((cache / p["wheel"]).is_file() for p in packages.values())
    after = provisioned_pi.doctor_after
    assert after.ok, after.to_text()
    assert after.check("runtime onnx").status == "ok"
    assert after.check("runtime tflite").detail.startswith("ai_edge_litert ")


def test_provision_again_is_offline_and_a_no_op(provisioned_pi):
    from edgekit.provision import provision

    pi = provisioned_pi.pi
    again = provision(DEVICE, pi.host, ssh=pi.ssh(), offline=True)
    assert again.installed is False
    assert sorted(p.sha256 for p in again.packages) == sorted(p["sha256"] for p in provisioned_pi.provision["packages"])


def test_stop_leaves_no_process_mount_or_cgroup(emulated_pi):
    from edgekit import emulator

    name = f"pytest-stopcheck-{os.getpid()}"
    try:
        state = emulator.start(DEVICE, name=name, fresh=True)
        assert emulator.ssh_ready(state.host, state.port)
        namespace_pids = _pids_with_root(Path(state.instance_dir))
        assert namespace_pids, "the device's processes should be visible while it runs"
    finally:
        emulator.stop(name, remove=True)
    assert not Path(f"/proc/{state.pid}").exists()
    assert not _pids_with_root(Path(state.instance_dir))
    assert state.instance_dir not in Path("/proc/mounts").read_text()
    assert state.cgroup is None or not Path(state.cgroup).exists()
    assert not emulator.ssh_ready(state.host, state.port, timeout=0.5)


def _pids_with_root(instance: Path) -> list[int]:
    """Processes chrooted into this instance (their /proc/PID/root points into it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        cmdline = (entry / "cmdline").read_bytes() if (entry / "cmdline").exists() else b""
        if root.startswith(str(instance)) or str(instance).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


# ------------------------------------------------------------------------------------ deploy

CASES = [
    ("onnx", "fp32", "api"),
    ("onnx", "int8", "api"),
    ("tflite", "fp32", "api"),
    ("tflite", "fp16", "api"),
    ("tflite", None, "cli"),  # no --format: the profile's first preference (tflite/int8), via the CLI
]
EXPECTED_RUNTIME = {"onnx": ("onnxruntime", "onnxruntime"), "tflite": ("ai_edge_litert", "ai-edge-litert")}


def _require_exporter(fmt: str, precision: str) -> None:
    try:
        from edgekit.export import get_format

        exporter = get_format(fmt)
    except Exception as exc:  # noqa: BLE001 - the export pieces are landing separately
        pytest.skip(f"the {fmt} exporter is not available in this checkout: {exc}")
    if precision not in getattr(exporter, "precisions", ()):
        pytest.skip(f"the {fmt} exporter does not support {precision}")
    if not exporter.available():
        pytest.skip(f"exporting {fmt} needs the [{exporter.extra}] extra")


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(("fmt", "precision", "via"), CASES, ids=[f"{f}-{p or 'preferred'}-{v}" for f, p, v in CASES])
def test_deploy_on_the_emulated_pi_matches_the_host(provisioned_pi, tmp_path, fmt, precision, via):
    from importlib.metadata import version

    from edgekit.devices import get

    profile = get(DEVICE)
    expected_precision = precision or next(p.precision for p in profile.preferred if p.format == fmt)
    _require_exporter(fmt, expected_precision)
    pi = provisioned_pi.pi
    out_dir = tmp_path / "artifacts"
    started = time.monotonic()
    if via == "cli":
        report_path = tmp_path / "report.json"
        # no --python: the SSH target puts the provisioned folder on the runner's path by itself
        done = run_cli("-q", "deploy", "example:fashion-cnn", "--device", DEVICE, *pi.cli_flags(),
                       "--eval-limit", str(EVAL_LIMIT),
                       "--runs", "10", "--warmup", "2", "--threads", "1", "-o", str(out_dir),
                       "--report", str(report_path))
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(report_path.read_text())
    else:
        from edgekit.deploy import DeployOptions, deploy

        options = DeployOptions(host=pi.host, format=fmt, precision=precision, eval_limit=EVAL_LIMIT, runs=10,
                                warmup=2, threads=1, out_dir=str(out_dir),
                                ssh=pi.ssh(python=provisioned_pi.python_command))
        report = deploy("example:fashion-cnn", DEVICE, options).model_dump(mode="json")
    took = time.monotonic() - started

    assert report["artifact"]["format"] == fmt
    assert report["artifact"]["precision"] == expected_precision
    assert report["target"]["kind"] == "ssh"
    facts = report["device_facts"]
    assert facts["machine"] == "aarch64" and facts["emulated_by"] == "qemu"
    assert facts["python"] == profile.python
    assert report["latency"]["representative"] is False  # qemu: latency is not the device's
    runtime, project = EXPECTED_RUNTIME[fmt]
    assert report["runtime"]["name"] == runtime
    assert report["runtime"]["version"] == version(project).split("+")[0]
    assert report["parity"]["passed"], report["parity"]
    assert report["accuracy"]["n"] == EVAL_LIMIT

    # the host runtime on the very same artifact and images
    artifact = out_dir / report["artifact"]["file"]
    host_correct, host_outputs, feeds = _host_accuracy(artifact, fmt, profile.runtimes[fmt])
    device_correct = round(report["accuracy"]["accuracy"] * EVAL_LIMIT)
    # int8: the aarch64 kernels and this host's (exact: VNNI, or uint8 weights where u8×s8
    # saturates) agree up to requantization rounding, which may flip a near-tie: 2 in 1,000.
    slack = 2 if expected_precision == "int8" else 0
    assert abs(device_correct - host_correct) <= slack, (
        f"{fmt}/{expected_precision}: {device_correct}/{EVAL_LIMIT} correct on the emulated pi4, "
        f"{host_correct}/{EVAL_LIMIT} on the host runtime"
    )
    device_outputs = _device_outputs(pi, provisioned_pi.python_command, artifact, fmt, profile, feeds, tmp_path)
    scale = max(1.0, float(np.abs(host_outputs).max()))
    tolerance = (0.02 if expected_precision == "int8" else 1e-3) * scale
    diff = float(np.abs(device_outputs - host_outputs).max())
    assert diff <= tolerance, f"device vs host outputs differ by {diff:.3g} (> {tolerance:.3g})"
    agree = float((device_outputs.argmax(1) == host_outputs.argmax(1)).mean())
    assert agree >= (62 / 64 if expected_precision == "int8" else 1.0), agree
    print(f"\n[{fmt}/{expected_precision} via {via}] {took:.0f} s; accuracy {device_correct}/{EVAL_LIMIT} "
          f"(host {host_correct}); max|device-host| {diff:.2g}")


def _eval_images():
    from edgekit.data.plan import eval_set

    return eval_set("example:fashion-mnist", EVAL_LIMIT)


def _host_accuracy(artifact: Path, fmt: str, runtimes: list[str]):
    from edgekit.resources import runner_module

    runner = runner_module()
    session = runner.open_model(str(artifact), fmt, runtimes=runtimes, threads=1)
    evalset = _eval_images()
    name = session.inputs[0]["name"]
    correct = 0
    first: list[np.ndarray] = []
    for i in range(len(evalset.y)):
        out = session.run({name: evalset.x[i : i + 1]})[0]
        correct += int(out.reshape(-1).argmax() == evalset.y[i])
        if i < 64:
            first.append(out.reshape(1, -1))
    return correct, np.concatenate(first), {name: evalset.x[:64]}


def _device_outputs(pi, python: str, artifact: Path, fmt: str, profile, feeds, tmp_path: Path) -> np.ndarray:
    from edgekit.targets.base import RunJob

    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **feeds)
    job = {"schema_version": 1, "mode": "outputs", "model": artifact.name, "format": fmt,
           "runtimes": profile.runtimes[fmt], "providers": profile.onnx_providers, "threads": 1,
           "inputs": "inputs.npz", "save_outputs": "outputs.npz"}
    local = tmp_path / "device-outputs"
    local.mkdir()
    with pi.target(python=python) as target:
        result = target.run(RunJob(job=job, files={artifact.name: artifact, "inputs.npz": inputs},
                                   fetch=["outputs.npz"]), local)
    with np.load(result.files["outputs.npz"], allow_pickle=False) as data:
        return data[sorted(data.files)[0]].reshape(len(next(iter(feeds.values()))), -1)


@pytest.mark.timeout(1500)
def test_an_image_folder_on_the_emulated_pi_scores_what_the_bundled_data_scores(provisioned_pi, tmp_path):
    """Your data on the device: --eval DIR of PNGs gives, on the aarch64 device in its runtime,
    the top-1 that --eval example:fashion-mnist gives on the same images."""
    import gzip

    from PIL import Image

    from edgekit.data.fashion_mnist import FASHION_MNIST_DIR
    from edgekit.deploy import DeployOptions, deploy

    n = 200
    with gzip.open(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)[:n]
    folder = tmp_path / "photos"
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i:04d}.png")
    pi = provisioned_pi.pi

    def run(**kwargs):  # noqa: ANN003
        options = DeployOptions(host=pi.host, runs=3, warmup=1, threads=1, ssh=pi.ssh(python=provisioned_pi.python_command),
                                **kwargs)
        return deploy("example:fashion-cnn", DEVICE, options)

    by_folder, by_name = run(eval_data=str(folder)), run(eval_limit=n)
    assert by_folder.device_facts["machine"] == "aarch64"
    assert by_folder.accuracy.n == by_name.accuracy.n == n
    assert by_folder.accuracy.accuracy == by_name.accuracy.accuracy
    assert by_folder.data["evaluation"].startswith("photos/")
