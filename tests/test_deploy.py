"""`edgekit deploy` end to end: the bundled model on the emulated pi4 and over a real OpenSSH server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.deploy import DeployOptions, deploy


@pytest.fixture(scope="module")
def emulated_report():
    return deploy("example:fashion-cnn", "pi4",
                  DeployOptions(emulate=True, format="onnx", precision="int8", runs=50, warmup=5, eval_limit=2000))


@pytest.mark.slow
def test_emulated_deploy_reports_real_measurements(emulated_report) -> None:
    r = emulated_report
    assert r.artifact.format == "onnx" and r.artifact.precision == "int8"
    assert r.artifact.reference_size_bytes and r.artifact.size_bytes < 0.5 * r.artifact.reference_size_bytes
    assert r.latency.n == 50 == len(r.latency.samples_ms)
    assert 0 < r.latency.min_ms <= r.latency.p50_ms <= r.latency.p99_ms <= r.latency.max_ms
    assert r.latency.init_ms > 0 and r.latency.first_ms > 0
    assert r.memory.peak_rss_mib >= r.memory.baseline_rss_mib > 0
    assert r.parity.reference == "torch" and r.parity.n == 64 and r.parity.passed
    assert r.parity.top1_agreement >= 0.95
    # accuracy of the int8 artifact, measured by the runner on 2,000 real test images
    assert r.accuracy.n == 2000
    assert abs(r.accuracy.accuracy - r.accuracy.reference_accuracy) < 0.01
    assert r.target.kind == "emulated" and not r.latency.representative
    assert any("cores" in item for item in r.target.reproduced + r.target.not_reproduced)


@pytest.mark.slow
def test_report_json_round_trips(emulated_report) -> None:
    data = json.loads(emulated_report.to_json())
    assert data["schema_version"] >= 1 and data["kind"] == "deploy"
    assert len(data["latency"]["samples_ms"]) == 50
    assert data["artifact"]["manifest"]["sha256"] == data["artifact"]["sha256"]


@pytest.mark.slow
def test_cli_deploy_writes_report_and_user_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, example_cnn) -> None:
    import torch

    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x)  # one unnamed array: matched to the one input
    code = main(["-q", "deploy", "example:fashion-cnn", "--device", "pi4", "--emulate", "--format", "onnx",
                 "--precision", "fp32", "--runs", "20", "--warmup", "2", "--eval-limit", "500",
                 "--inputs", str(inputs), "--save-outputs", str(tmp_path / "out.npz"),
                 "--report", str(tmp_path / "report.json"), "-o", str(tmp_path / "artifacts")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "edgekit deploy  example:fashion-cnn → pi4" in out and "p50" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["runs"] == 20
    with np.load(tmp_path / "out.npz", allow_pickle=False) as saved:
        device_out = saved[saved.files[0]]
    with torch.no_grad():
        expected = example_cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(device_out, expected, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [
        "fashion-cnn.fp32.onnx", "fashion-cnn.fp32.onnx.manifest.json"]


@pytest.mark.slow
def test_model_file_deployed_as_is_checks_parity_against_host_runtime(tmp_path: Path) -> None:
    first = deploy("example:fashion-cnn", "pi4", DeployOptions(emulate=True, format="onnx", precision="fp32",
                                                               runs=5, warmup=1, out_dir=str(tmp_path)))
    onnx_file = tmp_path / first.artifact.file
    report = deploy(str(onnx_file), "pi4", DeployOptions(emulate=True, runs=5, warmup=1))
    assert report.artifact.sha256 == first.artifact.sha256
    assert report.parity.reference == "host runtime" and report.parity.max_abs_diff < 1e-5
    assert report.accuracy is None


@pytest.mark.slow
@pytest.mark.ssh
def test_ssh_deploy_leaves_no_run_directory(ssh_device) -> None:
    ssh_device.require_runtime()
    report = deploy("example:fashion-cnn", "pi4", DeployOptions(
        host=ssh_device.address, format="onnx", precision="int8", runs=20, warmup=2, eval_limit=500,
        ssh={"key_filename": str(ssh_device.client_key), "known_hosts": str(ssh_device.known_hosts),
             "python": ssh_device.python, "ssh_config": str(ssh_device.ssh_config), "use_agent": False}))
    assert report.target.kind == "ssh" and ssh_device.user in report.target.address
    assert report.latency.n == 20 and report.parity.passed
    assert report.accuracy.n == 500 and report.accuracy.accuracy > 0.85
    assert ssh_device.run_dirs("~/.cache/edgekit") == []


@pytest.mark.ssh
def test_unknown_host_key_is_refused_with_one_line(ssh_device, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    code = main(["deploy", "example:fashion-cnn", "--device", "pi4", "--format", "onnx", "--precision", "fp32",
                 "--host", ssh_device.address, "-i", str(ssh_device.client_key), "--known-hosts", str(empty)])
    err = capsys.readouterr().err
    assert code == 6
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "SHA256:" in lines[0] and "--accept-new-host-key" in lines[0]
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_executorch_deploys_under_emulate(precision: str, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("executorch") is None:
        pytest.skip("needs the [executorch] extra")
    report = deploy("example:fashion-cnn", "pi4", DeployOptions(
        emulate=True, format="executorch", precision=precision, runs=10, warmup=2, eval_limit=1000,
        out_dir=str(tmp_path)))
    assert report.artifact.format == "executorch" and report.artifact.file.endswith(".pte")
    assert report.runtime.name == "executorch"
    assert report.parity.passed and report.parity.top1_agreement >= (0.95 if precision == "int8" else 1.0)
    # the artifact's own accuracy in ExecuTorch on 1,000 real test images, beside torch's
    assert report.accuracy.n == 1000
    assert abs(report.accuracy.accuracy - report.accuracy.reference_accuracy) <= (0.01 if precision == "int8" else 0.001)
    if precision == "int8":
        assert report.artifact.size_bytes < 0.5 * report.artifact.reference_size_bytes
