"""The deploy flow over SSH: one connection for the three jobs, transfer counters in the report,
the device-state warnings with the runner's real field names.

The artifact is made by hand (``make_prepared``) so these tests do not depend on the exporters;
``edgekit.deploy.measure_on_target`` is the same code ``edgekit deploy --host`` runs.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import Dataset
from edgekit.deploy import DeployOptions, PreparedDeploy, _warnings, measure_on_target, save_npz
from edgekit.devices import get as get_profile
from edgekit.export.base import Artifact, TensorSpec
from edgekit.models import ResolvedModel
from edgekit.report.progress import NULL_PROGRESS
from edgekit.resources import runner_module
from tests.targets.test_ssh import tiny_onnx


def make_prepared(work: Path, device: str = "pi4", size_bytes: int | None = None) -> PreparedDeploy:
    """A PreparedDeploy for the tiny ONNX model (x: [1, 4] -> y: [1, 3]) with parity and eval files.

    ``size_bytes`` pads the model with an unused initializer to about that size (benchmarks).
    """
    import onnxruntime as ort

    work.mkdir(parents=True, exist_ok=True)
    model = tiny_onnx(work / "tiny.onnx")
    if size_bytes:
        _pad_onnx(model, size_bytes)
    artifact = Artifact(path=model, format="onnx", precision="fp32",
                        inputs=[TensorSpec("x", [1, 4], "float32")], outputs=[TensorSpec("y", [1, 3], "float32")])
    rng = np.random.default_rng(0)
    parity_x = {"x": rng.standard_normal((16, 4)).astype(np.float32)}
    evaluation = Dataset(name="random 3-class", source="random", inputs={"x": rng.standard_normal((64, 4)).astype(np.float32)},
                         labels=rng.integers(0, 3, 64).astype(np.int64), summary="64 samples")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"x": row[None]})[0] for row in parity_x["x"]])
    prepared = PreparedDeploy(
        model=str(model), profile=get_profile(device), resolved=ResolvedModel(name="tiny", file=model, file_format="onnx"),
        artifact=artifact, reference_size=None, because="deployed as given", evaluation=evaluation,
        parity_inputs=parity_x, parity_npz=save_npz(work / "parity_inputs.npz", parity_x), user_inputs_npz=None,
        eval_npz=save_npz(work / "eval.npz", evaluation.inputs), work=work,
    )
    prepared._memo["reference"] = ("host runtime", [expected])
    return prepared


def _pad_onnx(path: Path, size_bytes: int) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    pad = np.random.default_rng(1).standard_normal(max(size_bytes // 4, 1)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(pad, "unused_padding"))
    onnx.save(model, str(path))


def _compare_outputs(expected, actual, precision="fp32"):  # noqa: ANN001, ANN202 - stand-in
    diffs = [np.abs(np.asarray(e, np.float64) - np.asarray(a, np.float64)) for e, a in zip(expected, actual)]
    worst = max(float(d.max()) for d in diffs)
    return {"n": int(len(expected[0])), "max_abs_diff": worst, "mean_abs_diff": float(np.mean(diffs[0])),
            "top1_agreement": None, "tolerance": 1e-4, "passed": worst <= 1e-4}


@pytest.fixture
def parity_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgekit.export.parity`` (the exporters' comparison), or a small stand-in until it lands."""
    try:
        import edgekit.export.parity  # noqa: F401
    except ImportError:
        stub = types.ModuleType("edgekit.export.parity")
        stub.compare_outputs = _compare_outputs
        monkeypatch.setitem(sys.modules, "edgekit.export.parity", stub)


def ssh_options(ssh_device) -> dict:
    return {"python": ssh_device.python, "key_filename": str(ssh_device.client_key),
            "known_hosts": str(ssh_device.known_hosts), "ssh_config": str(ssh_device.ssh_config),
            "use_agent": False, "connect_timeout": 5}


@pytest.mark.ssh
def test_deploy_runs_three_jobs_over_one_connection(ssh_device, parity_module, tmp_path: Path) -> None:
    ssh_device.require_runtime()
    from edgekit.targets import create_target

    prepared = make_prepared(tmp_path / "work")
    options = DeployOptions(host=ssh_device.address, runs=5, warmup=1, threads=1, ssh=ssh_options(ssh_device))
    workdir = f"~/edgekit-deploy-{tmp_path.name[-8:]}"
    accepted = ssh_device.sshd.log_text().count("Accepted publickey")

    def measure() -> object:
        target = create_target(prepared.profile, host=ssh_device.address, ssh=options.ssh.merged({"workdir": workdir}))
        return measure_on_target(prepared, target, options, NULL_PROGRESS, local=tmp_path / "out")

    try:
        cold = measure()
        assert ssh_device.sshd.log_text().count("Accepted publickey") == accepted + 1  # ONE connection, 3 jobs
        warm = measure()
    finally:
        import shutil

        shutil.rmtree(ssh_device.remote_path(workdir), ignore_errors=True)
    assert cold.target.transfer["connections"] == 1 and cold.target.transfer["runs"] == 3
    assert cold.target.transfer["bytes_pushed"] > prepared.artifact.size_bytes
    assert warm.target.transfer["bytes_pushed"] == 0  # an unchanged model: nothing crosses the link
    assert warm.target.transfer["files_cached"] == 8  # runner+model ×3, parity inputs, eval set
    assert warm.parity is not None and warm.parity.passed
    assert warm.accuracy is not None and warm.accuracy.n == 64
    assert warm.latency.n == 5 and warm.state_before and "governor" in warm.state_before
    assert ssh_device.run_dirs(workdir) == []


def test_state_warnings_read_the_runners_fields() -> None:
    runner = runner_module()
    state = {"governor": "ondemand", "cur_freq_khz": 600000, "max_freq_khz": 1800000, "temperature_c": 81.0,
             "throttled": runner.decode_throttled(0x50005)}  # under-voltage + throttled now and since boot
    warnings = _warnings({"state_before": state, "state_after": state}, None, True)
    assert any("governor is 'ondemand'" in w for w in warnings)
    assert any("is throttling (throttled, under_voltage" in w and "0x50005" in w for w in warnings)
    past = dict(state, governor="performance", throttled=runner.decode_throttled(0x50000))
    warnings = _warnings({"state_before": past, "state_after": past}, None, True)
    assert len(warnings) == 1 and "throttled since boot" in warnings[0]
    calm = dict(past, throttled=runner.decode_throttled(0))
    assert _warnings({"state_before": calm, "state_after": calm}, None, True) == []
    assert _warnings({"state_before": {}, "state_after": {"throttled": None}}, None, True) == []


def test_cli_asks_for_a_password_only_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from edgekit.cli import _ssh_options, build_parser

    asked: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": asked.append(prompt) or "s3cret")
    parser = build_parser()
    plain = _ssh_options(parser.parse_args(["deploy", "m.onnx", "--device", "pi4", "--host", "h"]))
    assert plain.password is None and asked == []
    told = _ssh_options(parser.parse_args(["deploy", "m.onnx", "--device", "pi4", "--host", "h", "--password",
                                           "--connect-timeout", "2.5"]))
    assert told.password == "s3cret" and len(asked) == 1 and told.connect_timeout == 2.5
