"""The standalone runner (runtimes/edgekit_runner.py): outputs, result.json, errors as data."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.resources import runner_path

from .conftest import INPUT_SHAPE

PY = sys.executable


def rand(shape=INPUT_SHAPE, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def write_job(run_dir: Path, **job) -> Path:
    body = {"schema_version": 1, "mode": "benchmark", "warmup": 2, "runs": 5}
    body.update(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job.json").write_text(json.dumps(body))
    return run_dir


def run_main(runner, run_dir: Path) -> tuple[int, dict]:
    code = runner.main([str(run_dir)])
    return code, json.loads((run_dir / "result.json").read_text())


# -- the file's own rules --------------------------------------------------------------------


# `vermin -t=3.6-` over the runner and every other device-side program (and a check that it
# catches a regression): tests/runtimes/test_device_programs.py


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(runner_path().read_text())
    top = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module != "__future__", "no __future__ imports in the runner"
            top.add((node.module or "").split(".")[0])
    assert "edgekit" not in top
    third_party = top - set(sys.stdlib_module_names)
    assert third_party == {"numpy"}, third_party  # runtimes (and onnx, optional) are imported by name, lazily
    assert not any(isinstance(n, ast.NamedExpr) for n in ast.walk(tree))


# -- parity with torch -----------------------------------------------------------------------


def test_onnx_outputs_match_torch(runner, onnx_model, tiny_model):
    session = runner.open_model(onnx_model, "onnx", threads=1)
    x = rand()
    (out,) = session.run({"x": x})
    np.testing.assert_allclose(out, tiny_model[1](x), atol=1e-4)
    assert session.runtime["name"] == "onnxruntime"
    assert session.runtime["providers"] == ["CPUExecutionProvider"]
    assert session.inputs == [
        {"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32", "quantization": None}
    ]
    assert session.outputs[0]["shape"] == [1, 10]


def test_onnx_dynamic_batch_is_reported_and_runs(runner, onnx_dynamic, tiny_model):
    session = runner.open_model(onnx_dynamic, "onnx")
    assert session.inputs[0]["shape"] == [None, 3, 16, 16]
    x = rand((5, 3, 16, 16))
    np.testing.assert_allclose(session.run({"x": x})[0], tiny_model[1](x), atol=1e-4)


def test_missing_providers_are_skipped_with_a_note(runner, onnx_model):
    session = runner.open_model(
        onnx_model, "onnx",
        providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert session.runtime["providers"] == ["CPUExecutionProvider"]
    notes = " ".join(session.notes)
    assert "TensorrtExecutionProvider not available" in notes
    assert "CUDAExecutionProvider not available" in notes


@pytest.mark.tflite
def test_tflite_outputs_match_torch(runner, tflite_model, tiny_model):
    session = runner.open_model(tflite_model, "tflite", threads=1)
    assert session.runtime["name"] == "ai_edge_litert"
    name = session.inputs[0]["name"]
    x = rand(seed=3)
    (out,) = session.run({name: x})
    np.testing.assert_allclose(out, tiny_model[1](x), atol=1e-4)


@pytest.mark.tflite
def test_tflite_int8_io_is_quantized_and_dequantized(runner, tflite_int8, tiny_model):
    session = runner.open_model(tflite_int8, "tflite", threads=1)
    spec = session.inputs[0]
    assert spec["dtype"] == "int8"
    quant = spec["quantization"]
    assert quant is not None and quant["scale"] > 0
    assert session.outputs[0]["dtype"] == "int8" and session.outputs[0]["quantization"]

    x = rand(seed=4)
    native = session.prepare({spec["name"]: x})[spec["name"]]
    expected = np.clip(np.round(x / quant["scale"]) + quant["zero_point"], -128, 127)
    assert native.dtype == np.int8
    np.testing.assert_array_equal(native, expected.astype(np.int8))

    (out,) = session.run({spec["name"]: x})
    assert out.dtype == np.float32
    reference = tiny_model[1](x)
    spread = float(reference.max() - reference.min())
    assert np.abs(out - reference).max() < 0.1 * spread  # int8 error, not garbage
    out_scale = session.outputs[0]["quantization"]["scale"]
    # dequantized values lie on the output's quantization grid
    grid = (out / out_scale) - np.round(out / out_scale)
    assert np.abs(grid).max() < 1e-3


@pytest.mark.tflite
def test_io_quantization_from_the_job_overrides_the_model(runner, tflite_int8):
    probe = runner.open_model(tflite_int8, "tflite")
    name = probe.inputs[0]["name"]
    session = runner.open_model(
        tflite_int8, "tflite",
        io_quantization={"inputs": {name: {"scale": 0.5, "zero_point": -3, "dtype": "int8"}}},
    )
    assert session.inputs[0]["quantization"] == {"scale": 0.5, "zero_point": -3}
    x = np.full(INPUT_SHAPE, 2.0, dtype=np.float32)
    assert (session.prepare({name: x})[name] == 1).all()  # 2.0 / 0.5 - 3


def test_per_axis_io_quantization(runner):
    scale, zero, axis = runner._quant_from_job(
        {"scale": [0.5, 0.25], "zero_point": [0, 4], "axis": 1}, np.dtype("int8"))
    assert axis == 1 and scale.tolist() == [0.5, 0.25] and zero.tolist() == [0, 4]
    x = np.array([[1.0, 1.0], [-1.0, 2.0]], dtype=np.float32)
    q = runner.quantize(x, scale, zero, np.int8, axis)
    np.testing.assert_array_equal(q, [[2, 8], [-2, 12]])
    np.testing.assert_allclose(runner.dequantize(q, scale, zero, axis), x)
    with pytest.raises(runner.RunnerError) as caught:
        runner._quant_from_job({"zero_point": 3}, np.dtype("int8"))
    assert caught.value.kind == "bad_job"


def test_onnx_int8_input_uses_io_quantization(runner, tmp_path):
    """ONNX full-integer inputs are rare; they are quantized with io_quantization only."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)], "cast",
        [helper.make_tensor_value_info("q", TensorProto.INT8, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "int8_in.onnx"
    onnx.save(model, str(path))
    session = runner.open_model(
        path, "onnx",
        io_quantization={"inputs": {"q": {"scale": 0.25, "zero_point": 10, "dtype": "int8"}}},
    )
    (out,) = session.run({"q": np.array([0.0, 1.0, -1.0, 100.0], dtype=np.float32)})
    np.testing.assert_array_equal(out, [10, 14, 6, 127])  # the raw int8 the model received


# -- benchmark mode and result.json --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("tflite", marks=pytest.mark.tflite)])
def test_benchmark_result_is_complete_and_plausible(runner, request, tmp_path, fmt):
    model = request.getfixturevalue("onnx_model" if fmt == "onnx" else "tflite_model")
    run_dir = write_job(tmp_path / "run", model=str(model), format=fmt, threads=1, warmup=3,
                        runs=11)
    code, result = run_main(runner, run_dir)
    assert code == 0, result["error"]
    assert result["ok"] is True and result["error"] is None
    assert result["schema_version"] == 1 and result["mode"] == "benchmark"
    assert result["runtime"]["name"] == ("onnxruntime" if fmt == "onnx" else "ai_edge_litert")
    assert result["runtime"]["threads"] == 1
    assert len(result["warmup_ms"]) == 3
    assert len(result["samples_ms"]) == 11
    assert all(s > 0 for s in result["samples_ms"])
    timings = result["timings_ms"]
    assert timings["import"] >= 0 and timings["init"] > 0 and timings["first"] > 0
    memory = result["memory"]
    assert memory["baseline_rss_kib"] > 10_000
    assert memory["peak_rss_kib"] >= memory["baseline_rss_kib"]
    assert result["model"]["size_bytes"] == model.stat().st_size
    assert result["model"]["inputs"][0]["shape"] == [1, 3, 16, 16]
    device = result["device"]
    for key in ("machine", "system", "release", "python", "numpy", "cpu_model", "cores",
                "emulated_by"):
        assert key in device
    assert device["cores"] == len(os.sched_getaffinity(0))
    assert device["numpy"] == np.__version__ and device["emulated_by"] is None
    for state in (result["state_before"], result["state_after"]):
        assert set(state) == {"governor", "cur_freq_khz", "max_freq_khz", "temperature_c",
                              "throttled", "jetson"}
    assert sorted(p.name for p in run_dir.iterdir()) == ["job.json", "result.json"]


def test_min_seconds_keeps_timing(runner, onnx_model, tmp_path):
    run_dir = write_job(tmp_path, model=str(onnx_model), format="onnx", threads=1, runs=2,
                        min_seconds=0.3)
    code, result = run_main(runner, run_dir)
    assert code == 0
    assert len(result["samples_ms"]) > 2
    assert sum(result["samples_ms"]) > 150  # ms of inference inside 0.3 s of timing


def test_time_loop_counts(runner):
    calls = []
    samples = runner.time_loop(lambda: calls.append(1), 17)
    assert len(samples) == len(calls) == 17
    capped = runner.time_loop(lambda: None, 3, min_seconds=5.0, max_runs=50)
    assert len(capped) == 50


def test_inputs_npz_and_save_outputs(runner, onnx_model, tiny_model, tmp_path):
    x = rand(seed=7)
    np.savez(tmp_path / "inputs.npz", x=x)
    run_dir = write_job(tmp_path, model=str(onnx_model), format="onnx",
                        inputs="inputs.npz", save_outputs="outputs.npz")
    code, result = run_main(runner, run_dir)
    assert code == 0, result["error"]
    with np.load(tmp_path / "outputs.npz", allow_pickle=False) as saved:
        np.testing.assert_allclose(saved["logits"], tiny_model[1](x), atol=1e-4)


def test_fresh_process_exit_codes_and_cold_import(onnx_model, tmp_path):
    ok_dir = write_job(tmp_path / "ok", model=str(onnx_model), format="onnx", threads=1)
    proc = subprocess.run([PY, str(runner_path()), str(ok_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((ok_dir / "result.json").read_text())
    assert result["timings_ms"]["import"] > 1.0  # a real, cold import of onnxruntime
    assert not any("already imported" in n for n in result["notes"])
    assert result["memory"]["peak_rss_kib"] >= result["memory"]["baseline_rss_kib"] > 0

    bad_dir = write_job(tmp_path / "bad", model="nope.onnx", format="onnx")
    proc = subprocess.run([PY, str(runner_path()), str(bad_dir)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert json.loads((bad_dir / "result.json").read_text())["error"]["kind"] == "model_load"
    assert "model_load" in proc.stderr

    proc = subprocess.run([PY, str(runner_path())], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


# -- errors are data ---------------------------------------------------------------------------


def _error(runner, run_dir):
    code, result = run_main(runner, run_dir)
    assert code == 1 and result["ok"] is False
    return result["error"]


def test_missing_model_is_model_load(runner, tmp_path):
    error = _error(runner, write_job(tmp_path, model="missing.onnx", format="onnx"))
    assert error["kind"] == "model_load" and "missing.onnx" in error["message"]


def test_corrupt_onnx_is_model_load(runner, tmp_path):
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 50)
    error = _error(runner, write_job(tmp_path, model="corrupt.onnx", format="onnx"))
    assert error["kind"] == "model_load"
    assert "onnxruntime could not load" in error["message"]


@pytest.mark.tflite
def test_corrupt_tflite_is_model_load(runner, tmp_path):
    (tmp_path / "corrupt.tflite").write_bytes(b"not a flatbuffer" * 20)
    error = _error(runner, write_job(tmp_path, model="corrupt.tflite", format="tflite"))
    assert error["kind"] == "model_load"


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"image": np.zeros(INPUT_SHAPE, np.float32)}, "missing ['x']"),
        ({"x": np.zeros((1, 3, 8, 8), np.float32)}, "has shape [1, 3, 8, 8]"),
        ({"x": np.zeros(INPUT_SHAPE, np.float32), "extra": np.zeros(2)}, "unexpected ['extra']"),
    ],
    ids=["wrong-name", "wrong-shape", "extra-array"],
)
def test_bad_inputs_are_bad_input(runner, onnx_model, tmp_path, arrays, needle):
    np.savez(tmp_path / "in.npz", **arrays)
    error = _error(runner, write_job(tmp_path, model=str(onnx_model), format="onnx",
                                     inputs="in.npz"))
    assert error["kind"] == "bad_input" and needle in error["message"]


def test_pickled_npz_is_refused(runner, onnx_model, tmp_path):
    objects = np.empty(1, dtype=object)
    objects[0] = {"evil": "pickle"}
    np.savez(tmp_path / "in.npz", x=objects)  # needs pickle to load
    error = _error(runner, write_job(tmp_path, model=str(onnx_model), format="onnx",
                                     inputs="in.npz"))
    assert error["kind"] == "bad_input"
    assert "allow_pickle" in error["message"] or "pickle" in error["message"].lower()


def test_runtime_restricted_to_a_missing_one_is_runtime_missing(runner, tmp_path):
    for name in ("tflite_runtime", "tensorflow"):
        try:
            __import__(name)
            pytest.skip(f"{name} is installed here")
        except ImportError:
            pass
    error = _error(runner, write_job(tmp_path, model="m.tflite", format="tflite",
                                     runtimes=["tflite_runtime"]))
    assert error["kind"] == "runtime_missing"
    assert "tflite_runtime" in error["message"]
    error = _error(runner, write_job(tmp_path, model="m.tflite", format="tflite",
                                     runtimes=["onnxruntime"]))
    assert error["kind"] == "runtime_missing"


@pytest.mark.parametrize(
    "job, needle",
    [
        ({"schema_version": 2}, "schema_version"),
        ({"format": "pt"}, "format"),
        ({"mode": "train"}, "mode"),
        ({"runs": -1}, "runs"),
        ({"runtimes": ["onnxruntime", "openvino"]}, "unknown runtimes"),
        ({"mode": "evaluate"}, "eval"),
    ],
)
def test_bad_jobs_are_bad_job(runner, onnx_model, tmp_path, job, needle):
    body = {"model": str(onnx_model), "format": "onnx"}
    body.update(job)
    error = _error(runner, write_job(tmp_path, **body))
    assert error["kind"] == "bad_job" and needle in error["message"]


def test_missing_or_broken_job_json_is_bad_job(runner, tmp_path):
    error = _error(runner, tmp_path)
    assert error["kind"] == "bad_job" and "job.json" in error["message"]
    (tmp_path / "job.json").write_text("{not json")
    assert _error(runner, tmp_path)["kind"] == "bad_job"


# -- evaluate mode ---------------------------------------------------------------------------


def _eval_set(forward, n=10, wrong=3):
    x = np.random.RandomState(11).standard_normal((n,) + INPUT_SHAPE[1:]).astype(np.float32)
    predicted = forward(x).argmax(axis=1)
    y = predicted.copy()
    y[:wrong] = (y[:wrong] + 1) % 10  # the first `wrong` labels disagree with the model
    return x, y, predicted


@pytest.mark.parametrize(
    "fmt, fixture, batch, expected_chunk",
    [
        ("onnx", "onnx_model", 4, 1),  # fixed batch 1: one sample at a time
        ("onnx", "onnx_dynamic", 4, 4),  # dynamic batch: batches of 4, the last one of 2
        pytest.param("tflite", "tflite_model", 4, 1, marks=pytest.mark.tflite),
    ],
)
def test_evaluate_matches_direct_computation(runner, request, tiny_model, tmp_path, fmt,
                                             fixture, batch, expected_chunk):
    model = request.getfixturevalue(fixture)
    x, y, predicted = _eval_set(tiny_model[1])
    np.savez(tmp_path / "eval.npz", images=x, labels=y)
    run_dir = write_job(
        tmp_path, mode="evaluate", model=str(model), format=fmt,
        eval={"data": "eval.npz", "x": "images", "y": "labels", "batch": batch,
              "predictions": "predictions.npy"},
    )
    code, result = run_main(runner, run_dir)
    assert code == 0, result["error"]
    ev = result["eval"]
    assert ev["n"] == 10 and ev["correct"] == 7 and ev["accuracy"] == pytest.approx(0.7)
    assert ev["batch"] == expected_chunk and ev["predictions"] == "predictions.npy"
    np.testing.assert_array_equal(np.load(tmp_path / "predictions.npy"), predicted)


@pytest.mark.parametrize(
    "fmt, fixture, expected_chunk",
    [
        ("onnx", "onnx_model", 1),  # fixed batch 1: one sample at a time, stacked back
        ("onnx", "onnx_dynamic", 3),  # dynamic: batches of `batch`
        pytest.param("tflite", "tflite_model", 1, marks=pytest.mark.tflite),
    ],
)
def test_outputs_mode_returns_every_samples_outputs(runner, request, tiny_model, tmp_path, fmt,
                                                    fixture, expected_chunk):
    model = request.getfixturevalue(fixture)
    name = runner.open_model(model, fmt).inputs[0]["name"]
    x = rand((5,) + INPUT_SHAPE[1:], seed=9)
    np.savez(tmp_path / "inputs.npz", **{name: x})
    run_dir = write_job(tmp_path, mode="outputs", model=str(model), format=fmt, batch=3,
                        inputs="inputs.npz", save_outputs="outputs.npz")
    code, result = run_main(runner, run_dir)
    assert code == 0, result["error"]
    assert result["outputs"]["n"] == 5 and result["outputs"]["batch"] == expected_chunk
    with np.load(tmp_path / "outputs.npz", allow_pickle=False) as saved:
        assert saved.files == result["outputs"]["names"]
        out = saved[saved.files[0]]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, tiny_model[1](x), atol=1e-4)


def test_outputs_mode_needs_inputs(runner, onnx_model, tmp_path):
    error = _error(runner, write_job(tmp_path, mode="outputs", model=str(onnx_model),
                                     format="onnx", save_outputs="o.npz"))
    assert error["kind"] == "bad_job" and "inputs" in error["message"]


def test_evaluate_rejects_mismatched_data(runner, onnx_model, tmp_path):
    np.savez(tmp_path / "eval.npz", x=np.zeros((4, 3, 16, 16), np.float32), y=np.zeros(3))
    error = _error(runner, write_job(tmp_path, mode="evaluate", model=str(onnx_model),
                                     format="onnx", eval={"data": "eval.npz"}))
    assert error["kind"] == "bad_input" and "labels" in error["message"]


# -- probe and device facts ------------------------------------------------------------------


def test_probe_reports_device_and_runtimes(tmp_path):
    import onnxruntime

    proc = subprocess.run([PY, str(runner_path()), "--probe", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] and result["mode"] == "probe"
    ort = result["runtimes"]["onnxruntime"]
    assert ort["available"] and ort["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in ort["providers"]
    from edgekit.resources import runner_module

    assert set(result["runtimes"]) == set(runner_module().KNOWN_RUNTIMES)  # every runtime is probed
    assert {"onnxruntime", "tensorrt", "ai_edge_litert", "tflite_runtime", "tensorflow"} <= set(result["runtimes"])
    if not shutil.which("trtexec") and not os.path.exists("/usr/src/tensorrt/bin/trtexec"):
        assert "no trtexec" in result["runtimes"]["tensorrt"]["error"]  # JetPack's TensorRT: not here
    for name, entry in result["runtimes"].items():
        assert entry["available"] == (entry["error"] is None), name
    assert result["device"]["cores"] == len(os.sched_getaffinity(0))
    assert result["device"]["python"] == "%d.%d.%d" % sys.version_info[:3]


PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 avx2
"""


def test_cpu_model_and_qemu_detection(runner):
    assert runner.cpu_model_from_cpuinfo(PI4_CPUINFO) == "Cortex-A72"
    assert runner.cpu_model_from_cpuinfo(X86_CPUINFO) == "AMD EPYC 7B13"
    assert runner.cpu_model_from_cpuinfo("Hardware\t: BCM2709\n") == "BCM2709"
    assert runner.cpu_model_from_cpuinfo(None) is None
    # an aarch64 Python that sees the host's x86 /proc/cpuinfo runs under qemu-user
    assert runner.detect_emulator("aarch64", X86_CPUINFO) == "qemu"
    assert runner.detect_emulator("x86_64", PI4_CPUINFO) == "qemu"
    assert runner.detect_emulator("aarch64", PI4_CPUINFO) is None
    assert runner.detect_emulator() is None  # this test process is native


def test_throttled_bits_are_decoded(runner):
    decoded = runner.decode_throttled(0x50005)
    assert decoded["raw"] == "0x50005" and decoded["any"] is True
    assert decoded["flags"] == ["under_voltage now", "under_voltage since boot", "throttled now",
                                "throttled since boot"]
    assert decoded["now"] == {"under_voltage": True, "freq_capped": False, "throttled": True,
                              "soft_temp_limit": False}
    assert decoded["since_boot"] == {"under_voltage": True, "freq_capped": False,
                                     "throttled": True, "soft_temp_limit": False}
    assert runner.decode_throttled(0)["now"]["throttled"] is False
    assert runner.decode_throttled(0)["any"] is False and runner.decode_throttled(0)["flags"] == []


def test_device_state_reads_vcgencmd_when_present(runner, tmp_path, monkeypatch):
    fake = tmp_path / "vcgencmd"
    fake.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x80008\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    state = runner.device_state()
    assert state["throttled"]["raw"] == "0x80008"
    assert state["throttled"]["now"]["soft_temp_limit"] is True
    assert state["throttled"]["since_boot"]["soft_temp_limit"] is True
    assert state["throttled"]["now"]["throttled"] is False


def test_missing_device_facts_are_null_not_errors(runner):
    facts = runner.device_facts()
    assert facts["machine"] and facts["cores"] >= 1
    state = runner.device_state()
    if not Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").exists():
        assert state["governor"] is None
    if not list(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        assert state["temperature_c"] is None
    json.dumps(facts), json.dumps(state)
