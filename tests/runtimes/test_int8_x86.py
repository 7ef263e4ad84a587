"""int8 ONNX on x86: the host computes what a device's exact int8 kernels compute.

x86 CPUs without VNNI sum u8×s8 products in saturating 16-bit pairs (ONNX Runtime's AVX2
kernels); ARM boards and VNNI CPUs do not. The runner measures that with a probe and, where it
saturates, runs the same weights stored as uint8 (+128). The reference here is ONNX Runtime with
graph optimizations off: QuantizeLinear/DequantizeLinear then execute as written, in float, with
exact int8 rounding and no kernel arithmetic — host-independent. Agreement is required on
≥ 99.5 % of top-1 answers: the float reference and exact integer kernels differ only in
requantization rounding (measured on an AVX2 host, 600 images: 100 % with the fix, 97.7 % without it).
The qemu test runs an x86 CPU that reports AVX2 without VNNI, so the saturating path is tested on
every host, VNNI or not (shared/notes/wave2-facts.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.resources import runner_module

pytestmark = pytest.mark.slow
QEMU = "/usr/bin/qemu-x86_64-static"
MIN_AGREEMENT = 0.995


@pytest.fixture(scope="module")
def example_int8_onnx(tmp_path_factory: pytest.TempPathFactory, example_cnn) -> Path:  # noqa: ANN001
    from edgekit.data.plan import calibration_inputs
    from edgekit.export.api import export
    from edgekit.models import resolve_model

    resolved = resolve_model("example:fashion-cnn")
    calibration = calibration_inputs(resolved.example_inputs, resolved.dataset)
    artifact = export(resolved.module, resolved.example_inputs, format="onnx", precision="int8",
                      calibration=calibration, out_dir=tmp_path_factory.mktemp("int8"), name="fc.int8",
                      check_parity=False)
    return artifact.path


def _float_qdq_top1(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.array([sess.run(None, {name: x[i : i + 1]})[0].argmax() for i in range(len(x))])


def _runner_top1(path: Path, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    runner = runner_module()
    session = runner.open_model(str(path), "onnx", threads=1)
    name = session._in[0].name
    return np.array([session.run({name: x[i : i + 1]})[0].argmax() for i in range(len(x))]), session.notes


def _dequantized_weights(model_bytes: bytes) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w, scale, zero = (inits[n] for n in node.input[:3])
            shape = [1] * w.ndim
            if scale.ndim:
                shape[0] = -1
            out[node.input[0]] = (w.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
    return out


def test_uint8_weights_keep_every_dequantized_value(example_int8_onnx: Path) -> None:
    original = example_int8_onnx.read_bytes()
    shifted, count = runner_module().uint8_weights(original)
    assert shifted is not None and count == 5  # 3 convs + 2 linear layers
    before, after = _dequantized_weights(original), _dequantized_weights(shifted)
    assert before.keys() == after.keys() and len(before) == count
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_uint8_weights_leave_a_float_model_alone(onnx_model: Path) -> None:
    assert runner_module().uint8_weights(onnx_model.read_bytes()) == (None, 0)


def test_runner_int8_matches_exact_int8_on_this_host(example_int8_onnx: Path, fashion_test_1k) -> None:  # noqa: ANN001
    x = fashion_test_1k.x[:600]
    top1, notes = _runner_top1(example_int8_onnx, x)
    agreement = float((top1 == _float_qdq_top1(example_int8_onnx, x)).mean())
    assert agreement >= MIN_AGREEMENT, (agreement, notes)
    import onnxruntime as ort

    shifted = any("run as uint8" in note for note in notes)
    assert shifted == runner_module().int8_kernels_saturate(ort), notes


def test_export_weight_type_uint8_stores_the_same_values(example_int8_onnx: Path, tmp_path: Path) -> None:
    from edgekit.data.plan import calibration_inputs
    from edgekit.export.api import export
    from edgekit.models import resolve_model

    resolved = resolve_model("example:fashion-cnn")
    artifact = export(resolved.module, resolved.example_inputs, format="onnx", precision="int8",
                      calibration=calibration_inputs(resolved.example_inputs, resolved.dataset), out_dir=tmp_path,
                      name="fc.u8", options={"weight_type": "uint8"}, check_parity=False)
    import onnx

    model = onnx.load(str(artifact.path))
    weight_types = {t.data_type for t in model.graph.initializer if t.name.endswith("_quantized")}
    assert weight_types == {onnx.TensorProto.UINT8}
    before, after = _dequantized_weights(example_int8_onnx.read_bytes()), _dequantized_weights(artifact.path.read_bytes())
    assert len(after) == 5
    for b, a in zip(sorted(before.values(), key=np.size), sorted(after.values(), key=np.size)):
        np.testing.assert_array_equal(a, b)
    assert any("stored as uint8" in note for note in artifact.notes)


@pytest.mark.skipif(not Path(QEMU).exists(), reason="qemu-user-static is a test dependency (make test installs it)")
def test_avx2_cpu_under_qemu_saturates_and_the_runner_corrects_it(example_int8_onnx: Path, fashion_test_1k,  # noqa: ANN001
                                                                   tmp_path: Path) -> None:
    """An AVX2 CPU without VNNI (qemu's Haswell model): the probe must say it saturates, and the
    runner's outputs must still agree with exact int8."""
    x = fashion_test_1k.x[:120]
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, json, numpy as np, onnxruntime as ort\n"
        f"sys.path.insert(0, {str(Path(runner_module().__file__).parent)!r})\n"
        "import edgekit_runner as r\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"s = r.open_model({str(example_int8_onnx)!r}, 'onnx', threads=1)\n"
        "top1 = [int(s.run({s._in[0].name: x[i:i+1]})[0].argmax()) for i in range(len(x))]\n"
        "print(json.dumps({'saturates': r.int8_kernels_saturate(ort), 'top1': top1, 'notes': s.notes}))\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["saturates"] is True
    assert any("run as uint8" in note for note in result["notes"])
    agreement = float((np.array(result["top1"]) == _float_qdq_top1(example_int8_onnx, x)).mean())
    assert agreement >= 0.99, agreement  # 120 images: one disagreement allowed


def test_qemu_binary_is_a_real_dependency() -> None:
    """make test installs qemu-user-static; the test above must not silently skip in CI."""
    if os.environ.get("CI", "").lower() == "true":
        assert shutil.which("qemu-x86_64-static") or Path(QEMU).exists()
