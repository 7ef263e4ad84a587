"""The runner's TensorRT path (Jetson): trtexec commands, the engine cache, trtexec's reports,
the Jetson power state, and whole runner jobs.

No Jetson, no GPU and no TensorRT can run here. Everything that needs trtexec runs against a
STAND-IN: a small Python script written into tmp_path (``fake_trtexec``) that takes trtexec's
documented flags, writes an "engine" file, computes outputs with ONNX Runtime and prints its
reports in the format of NVIDIA's samples/common/sampleReporting.cpp. Passing here says the
runner drives that interface as documented, not that a real trtexec on a real board accepts it:
that path is "not verified on hardware" (README, docs/tensorrt.md).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from .conftest import INPUT_SHAPE
from .test_runner import run_main, write_job

# the stand-in's trace: warm-up queries start computing before --warmUp (200 ms), timed ones after
FAKE_WARMUP_LATENCIES = [5.0, 4.0]
FAKE_LATENCY_MS = 1.25

FAKE_TRTEXEC = r'''#!{python}
"""A STAND-IN for NVIDIA's trtexec (tests only: no TensorRT here). It takes the documented
flags, logs each call to $FAKE_TRTEXEC_LOG, and prints trtexec's documented report lines."""
import json, os, sys
import numpy as np

args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
print("&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] [b26] # trtexec " + " ".join(sys.argv[1:]))
if "help" in args:
    print("=== Model Options ===")
    sys.exit(0)
if "onnx" in args:  # build
    if os.environ.get("FAKE_TRTEXEC_FAIL"):
        print("[12/07/2026-10:00:00] [E] [TRT] ModelImporter.cpp:771: While parsing node number 3 [Foo]")
        print("&&&& FAILED TensorRT.trtexec [TensorRT v{version}]")
        sys.exit(1)
    with open(args["saveEngine"], "w") as engine:
        json.dump({{"onnx": os.path.abspath(args["onnx"]), "flags": sys.argv[1:]}}, engine)
    print("[12/07/2026-10:00:01] [I] Engine built in 42.5 sec.")
    print("&&&& PASSED TensorRT.trtexec [TensorRT v{version}]")
    sys.exit(0)
with open(args["loadEngine"]) as engine:
    built = json.load(engine)
if "exportOutput" in args:
    import onnxruntime as ort
    sess = ort.InferenceSession(built["onnx"], providers=["CPUExecutionProvider"])
    files = dict(spec.rsplit(":", 1) for spec in args["loadInputs"].split(","))
    types = {{"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}}
    shapes = dict(spec.rsplit(":", 1) for spec in args.get("shapes", "").split(",") if spec)  # dynamic inputs need them
    feeds = {{i.name: np.fromfile(files[i.name], dtype=types[i.type]).reshape(
        [int(d) for d in shapes[i.name].split("x")] if i.name in shapes else i.shape) for i in sess.get_inputs()}}
    with open(args["exportOutput"], "w") as out:
        out.write("[\n")
        for n, (meta, value) in enumerate(zip(sess.get_outputs(), sess.run(None, feeds))):
            values = ", ".join(repr(float(v)) for v in value.ravel())
            out.write(("  " if n == 0 else ", ") + '{{ "name" : "%s"\n  , "dimensions" : "%s"\n  , "values" : [ %s ]\n  }}\n'
                      % (meta.name, "x".join(str(d) for d in value.shape), values))
        out.write("]\n")
if "exportTimes" in args:
    warm = {warm}
    runs = int(args.get("iterations", "10"))
    trace, start = [], 0.0
    for n in range(len(warm) + runs):
        latency = warm[n] if n < len(warm) else {latency}
        compute = start if n < len(warm) else 200.0 + start
        trace.append({{"startEnqMs": compute, "endEnqMs": compute + 0.1, "startH2dMs": compute,
                      "endH2dMs": compute + 0.1, "startComputeMs": compute, "endComputeMs": compute + 1.0,
                      "startD2hMs": compute + 1.0, "endD2hMs": compute + 1.1, "h2dMs": 0.1, "computeMs": 1.0,
                      "d2hMs": 0.15, "latencyMs": latency, "endToEndMs": latency}})
        start += latency
    with open(args["exportTimes"], "w") as out:
        json.dump(trace, out)
    p = "min = 1.2 ms, max = 1.3 ms, mean = 1.25 ms, median = 1.25 ms, percentile(90%) = 1.29 ms, percentile(95%) = 1.3 ms, percentile(99%) = 1.3 ms"
    for line in ("=== Performance summary ===", "Throughput: 790.5 qps", "Latency: " + p,
                 "Enqueue Time: " + p.replace("1.2", "0.2"), "H2D Latency: " + p, "GPU Compute Time: " + p,
                 "D2H Latency: " + p, "Total Host Walltime: 3.00128 s", "Total GPU Compute Time: 2.9 s"):
        print("[12/07/2026-10:00:02] [I] " + line)
print("&&&& PASSED TensorRT.trtexec [TensorRT v{version}]")
'''

# trtexec's report, as samples/common/sampleReporting.cpp (printEpilog) prints it behind its logger's
# "[date-time] [I] " prefix. A STAND-IN: written to match the documented format, not captured from a board.
SUMMARY_STANDIN = """\
[12/07/2026-10:00:02] [I] === Performance summary ===
[12/07/2026-10:00:02] [I] Throughput: 1523.42 qps
[12/07/2026-10:00:02] [I] Latency: min = 0.61377 ms, max = 1.20313 ms, mean = 0.651244 ms, median = 0.647461 ms, percentile(90%) = 0.665039 ms, percentile(95%) = 0.67334 ms, percentile(99%) = 0.72168 ms
[12/07/2026-10:00:02] [I] Enqueue Time: min = 0.2 ms, max = 0.5 ms, mean = 0.25 ms, median = 0.24 ms, percentile(90%) = 0.3 ms, percentile(95%) = 0.31 ms, percentile(99%) = 0.4 ms
[12/07/2026-10:00:02] [I] H2D Latency: min = 0.02 ms, max = 0.05 ms, mean = 0.021 ms, median = 0.02 ms, percentile(90%) = 0.022 ms, percentile(95%) = 0.023 ms, percentile(99%) = 0.03 ms
[12/07/2026-10:00:02] [I] GPU Compute Time: min = 0.58 ms, max = 1.1 ms, mean = 0.62 ms, median = 0.615 ms, percentile(90%) = 0.63 ms, percentile(95%) = 0.64 ms, percentile(99%) = 0.69 ms
[12/07/2026-10:00:02] [I] D2H Latency: min = 0.005 ms, max = 0.02 ms, mean = 0.01 ms, median = 0.01 ms, percentile(90%) = 0.012 ms, percentile(95%) = 0.013 ms, percentile(99%) = 0.015 ms
[12/07/2026-10:00:02] [I] Total Host Walltime: 3.00128 s
[12/07/2026-10:00:02] [I] Total GPU Compute Time: 2.83 s
[12/07/2026-10:00:02] [W] * Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized.
[12/07/2026-10:00:02] [I] Explanations of the performance metrics are printed in the verbose logs.
"""


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch):
    """A stand-in trtexec named by $EDGEKIT_TRTEXEC; returns (path, calls()): the argv of each call."""
    log = tmp_path / "trtexec-calls.jsonl"
    log.write_text("")
    path = tmp_path / "bin" / "trtexec"
    path.parent.mkdir()
    path.write_text(FAKE_TRTEXEC.format(python=sys.executable, version="100600", warm=FAKE_WARMUP_LATENCIES,
                                        latency=FAKE_LATENCY_MS))
    path.chmod(0o755)
    monkeypatch.setenv("EDGEKIT_TRTEXEC", str(path))
    monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(log))
    monkeypatch.setenv("EDGEKIT_ENGINE_CACHE", str(tmp_path / "engines"))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()]

    return path, calls


def builds(calls):
    return [c for c in calls if any(a.startswith("--saveEngine=") for a in c)]


def no_trtexec_anywhere(runner, monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEKIT_TRTEXEC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(runner, "JETPACK_TRTEXEC", str(tmp_path / "no" / "trtexec"))


# -- trtexec command lines and the engine cache ------------------------------------------------


def test_build_command_per_precision(runner):
    base = ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--skipInference"]
    assert runner.trtexec_build_command("trtexec", "m.onnx", "m.engine", "fp32", 10) == base
    assert runner.trtexec_build_command("trtexec", "m.onnx", "m.engine", "fp16", 10) == base + ["--fp16"]
    # explicit quantization: the QDQ ONNX's scales, the INT8 flag on, the rest in fp16; no calibrator
    assert runner.trtexec_build_command("trtexec", "m.onnx", "m.engine", "int8", 8) == base + ["--int8", "--fp16"]
    assert runner.trtexec_build_command("trtexec", "m.onnx", "m.engine", "int8", 10) == base + ["--int8", "--fp16"]
    # TensorRT 11 drops the precision builder flags: strong typing from the Q/DQ nodes
    assert runner.precision_flags("int8", 11) == ["--stronglyTyped"]
    with pytest.raises(runner.RunnerError) as info:
        runner.precision_flags("fp16", 11)
    assert info.value.kind == "model_load"
    with pytest.raises(runner.RunnerError) as info:
        runner.precision_flags("int4", 10)
    assert info.value.kind == "bad_job"


def test_dynamic_inputs_are_built_as_one_profile(runner):
    static = [("x", [1, 3, 16, 16])]
    assert runner.shape_flags(static) == []
    flags = runner.shape_flags([("x", [None, 3, 16, 16]), ("ids:0", [1, None])])
    spec = "x:1x3x16x16,'ids:0':1x1"
    assert flags == ["--minShapes=" + spec, "--optShapes=" + spec, "--maxShapes=" + spec]


def test_cache_key_changes_with_hash_version_and_flags(runner):
    key = runner.engine_cache_key("a" * 64, "10.6.0", ["--fp16"])
    assert key == runner.engine_cache_key("a" * 64, "10.6.0", ["--fp16"])
    assert key != runner.engine_cache_key("b" * 64, "10.6.0", ["--fp16"])
    assert key != runner.engine_cache_key("a" * 64, "10.3.0", ["--fp16"])
    assert key != runner.engine_cache_key("a" * 64, "10.6.0", ["--int8", "--fp16"])
    assert key != runner.engine_cache_key("a" * 64, "10.6.0", [])


def test_engine_cache_dir_order(runner, monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEKIT_ENGINE_CACHE", raising=False)
    assert runner.engine_cache_dir() == os.path.expanduser("~/.cache/edgekit/engines")
    monkeypatch.setenv("EDGEKIT_ENGINE_CACHE", str(tmp_path / "env"))
    assert runner.engine_cache_dir() == str(tmp_path / "env")
    assert runner.engine_cache_dir(str(tmp_path / "job")) == str(tmp_path / "job")


def test_engine_is_built_once_then_reused(runner, fake_trtexec, onnx_model, tmp_path):
    path, calls = fake_trtexec
    tool = runner.find_trtexec()
    assert (tool.path, tool.version, tool.major) == (str(path), "10.6.0", 10)
    inputs = [("x", list(INPUT_SHAPE))]
    cache = str(tmp_path / "cache")
    engine, first = runner.cached_engine(tool, str(onnx_model), "fp16", inputs, cache)
    again, second = runner.cached_engine(tool, str(onnx_model), "fp16", inputs, cache)
    assert engine == again and Path(engine).is_file()
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["build_seconds"] is not None and second["build_seconds"] is None
    assert len(builds(calls())) == 1 and "--fp16" in builds(calls())[0]
    sidecar = json.loads((tmp_path / "cache" / (first["key"] + ".json")).read_text())
    assert sidecar["tensorrt"] == "10.6.0" and sidecar["flags"] == ["--fp16"]
    # another precision is another engine
    int8, third = runner.cached_engine(tool, str(onnx_model), "int8", inputs, cache)
    assert int8 != engine and third["cache_hit"] is False and len(builds(calls())) == 2
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".engine", ".engine", ".json", ".json"]


def test_a_failed_build_is_model_load_and_caches_nothing(runner, fake_trtexec, onnx_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "1")
    tool = runner.find_trtexec()
    with pytest.raises(runner.RunnerError) as info:
        runner.cached_engine(tool, str(onnx_model), "fp32", [("x", list(INPUT_SHAPE))], str(tmp_path / "cache"))
    assert info.value.kind == "model_load"
    assert "While parsing node number 3" in info.value.message  # trtexec's own reason, passed on
    assert list((tmp_path / "cache").iterdir()) == []


# -- finding trtexec ---------------------------------------------------------------------------


def test_trtexec_is_looked_for_in_env_then_path_then_jetpack(runner, monkeypatch, tmp_path):
    no_trtexec_anywhere(runner, monkeypatch, tmp_path)
    with pytest.raises(ImportError, match="no trtexec"):
        runner.find_trtexec()
    jetpack = tmp_path / "jetpack" / "trtexec"
    jetpack.parent.mkdir()
    jetpack.write_text("#!/bin/sh\necho '&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --help'\n")
    jetpack.chmod(0o755)
    monkeypatch.setattr(runner, "JETPACK_TRTEXEC", str(jetpack))
    found = runner.find_trtexec()
    assert (found.path, found.version, found.major) == (str(jetpack), "8.2.1", 8)  # JetPack 4.6's TensorRT
    on_path = tmp_path / "empty" / "trtexec"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\necho '[TensorRT v100300]'\n")
    on_path.chmod(0o755)
    assert runner.find_trtexec().path == str(on_path)
    monkeypatch.setenv("EDGEKIT_TRTEXEC", str(jetpack))
    assert runner.find_trtexec().path == str(jetpack)


def test_trtexec_version_numbers(runner):
    assert runner.parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec") == "8.2.1"
    assert runner.parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100600] [b26] #") == "10.6.0"
    assert runner.parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v8603] [b4] #") == "8.6.3"
    assert runner.parse_trtexec_version("usage: something else") is None


def test_without_trtexec_the_runner_falls_back_to_onnxruntime(runner, onnx_model, tmp_path, monkeypatch):
    no_trtexec_anywhere(runner, monkeypatch, tmp_path)
    run_dir = write_job(tmp_path / "run", model=str(onnx_model), format="onnx",
                        runtimes=["tensorrt", "onnxruntime"], threads=1)
    code, result = run_main(runner, run_dir)
    assert code == 0 and result["ok"], result["error"]
    assert result["runtime"]["name"] == "onnxruntime"
    assert any(n.startswith("not importable: tensorrt (ImportError: no trtexec") and n.endswith("used onnxruntime")
               for n in result["notes"]), result["notes"]
    assert len(result["samples_ms"]) == 5


def test_tensorrt_alone_without_trtexec_is_runtime_missing(runner, onnx_model, tmp_path, monkeypatch):
    no_trtexec_anywhere(runner, monkeypatch, tmp_path)
    run_dir = write_job(tmp_path / "run", model=str(onnx_model), format="onnx", runtimes=["tensorrt"])
    code, result = run_main(runner, run_dir)
    assert code == 1 and result["error"]["kind"] == "runtime_missing"
    assert "JetPack" in result["error"]["message"]


# -- reading the ONNX file without onnx or onnxruntime -----------------------------------------


def test_onnx_io_reads_names_shapes_types_and_metadata(runner, onnx_model, onnx_dynamic, tmp_path):
    import onnx

    io = runner.onnx_io(str(onnx_model))
    assert io["inputs"] == [("x", [1, 3, 16, 16], "float32")]
    assert io["outputs"] == [("logits", [1, 10], "float32")]
    assert runner.onnx_io(str(onnx_dynamic))["inputs"] == [("x", [None, 3, 16, 16], "float32")]
    model = onnx.load(str(onnx_model))
    onnx.helper.set_model_props(model, {"edgekit.precision": "int8", "other": "x"})
    tagged = tmp_path / "tagged.onnx"
    onnx.save(model, str(tagged))
    assert runner.onnx_io(str(tagged))["metadata"] == {"edgekit.precision": "int8", "other": "x"}


# -- trtexec's reports (stand-ins in the documented format) ------------------------------------


def test_parse_trtexec_timing_summary(runner):
    """A stand-in: no TensorRT here; the text follows NVIDIA's documented format (sampleReporting.cpp)."""
    summary = runner.parse_trtexec_timing(SUMMARY_STANDIN)
    assert summary["throughput_qps"] == 1523.42
    assert summary["latency"]["median"] == 0.647461 and summary["latency"]["min"] == 0.61377
    assert summary["latency"]["percentiles"] == {"90": 0.665039, "95": 0.67334, "99": 0.72168}
    assert summary["gpu_compute"]["mean"] == 0.62
    assert summary["h2d"]["max"] == 0.05 and summary["d2h"]["median"] == 0.01
    assert summary["enqueue"]["mean"] == 0.25
    assert summary["total_host_walltime_s"] == 3.00128 and summary["total_gpu_compute_s"] == 2.83
    assert "end_to_end" not in summary  # not in this text: absent, never made up
    e2e = "[I] End-to-End Host Latency: min = 1 ms, max = 3 ms, mean = 2 ms, median = 2 ms, percentile(99%) = 3 ms"
    parsed = runner.parse_trtexec_timing(e2e)
    assert list(parsed) == ["end_to_end"] and parsed["end_to_end"]["percentiles"] == {"99": 3.0}
    assert runner.parse_trtexec_timing("&&&& FAILED TensorRT.trtexec") == {}


def test_parse_exported_times_splits_warmup_like_trtexec(runner):
    """A stand-in: the --exportTimes layout of sampleReporting.cpp's exportJSONTrace."""
    trace = [{"startComputeMs": 0.5, "latencyMs": 9.0}, {"startComputeMs": 199.9, "latencyMs": 2.0},
             {"startComputeMs": 200.0, "latencyMs": 1.5}, {"startComputeMs": 201.6, "latencyMs": 1.25}]
    assert runner.parse_trtexec_times(json.dumps(trace), 200) == ([9.0, 2.0], [1.5, 1.25])
    with pytest.raises(runner.RunnerError) as info:
        runner.parse_trtexec_times("[ {", 200)
    assert info.value.kind == "inference"


def test_parse_exported_outputs_with_non_finite_values(runner):
    """A stand-in: the --exportOutput layout of sampleReporting.cpp's exportJSONOutput, with the
    nan/inf spelling of C++ streams."""
    text = textwrap.dedent("""\
        [
          { "name" : "logits"
          , "dimensions" : "1x4"
          , "values" : [ 0.5, -inf, nan, 3e-05 ]
          }
        , { "name" : "infinity_count"
          , "dimensions" : "1"
          , "values" : [ inf ]
          }
        ]
        """)
    found = runner.parse_trtexec_outputs(text)
    dims, values = found["logits"]
    assert dims == [1, 4] and values[0] == 0.5 and values[1] == -np.inf and np.isnan(values[2])
    assert found["infinity_count"] == ([1], [np.inf])


# -- Jetson power mode and clocks --------------------------------------------------------------

NVPMODEL_STANDIN = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
NVPMODEL_ORIN_STANDIN = "NV Power Mode: 15W\n0\n"
JETSON_CLOCKS_ON_STANDIN = """\
SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit
Online CPUs: 0-3
cpu0: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
GPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=921600000
EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1
Fan: PWM=255
NV Power Mode: MAXN
"""


def test_parse_nvpmodel(runner):
    """A stand-in: no Jetson here; the text follows NVIDIA's documented format (`nvpmodel -q`)."""
    assert runner.parse_nvpmodel(NVPMODEL_STANDIN) == {"name": "MAXN", "id": 0}
    assert runner.parse_nvpmodel(NVPMODEL_ORIN_STANDIN) == {"name": "15W", "id": 0}
    assert runner.parse_nvpmodel("NV Power Mode: 5W\n") == {"name": "5W", "id": None}
    assert runner.parse_nvpmodel("") is None and runner.parse_nvpmodel("permission denied") is None


def test_parse_jetson_clocks(runner):
    """A stand-in: no Jetson here; the text follows NVIDIA's documented format (`jetson_clocks --show`)."""
    on = runner.parse_jetson_clocks(JETSON_CLOCKS_ON_STANDIN)
    assert on["on"] is True and on["cpu_pinned"] is True
    assert on["gpu"] == {"min_hz": 921600000, "max_hz": 921600000, "cur_hz": 921600000}
    assert on["emc"]["cur_hz"] == 1600000000
    off_text = JETSON_CLOCKS_ON_STANDIN.replace("GPU MinFreq=921600000", "GPU MinFreq=76800000").replace(
        "FreqOverride=1", "FreqOverride=0")
    off = runner.parse_jetson_clocks(off_text)
    assert off["on"] is False and off["cpu_pinned"] is True and off["gpu"]["min_hz"] == 76800000
    assert runner.parse_jetson_clocks("") is None and runner.parse_jetson_clocks("no clocks here") is None


def test_device_state_records_jetson_power_mode(runner, monkeypatch, tmp_path):
    """Stand-in nvpmodel and jetson_clocks on PATH printing NVIDIA's documented format."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvpmodel").write_text("#!/bin/sh\n[ \"$1\" = -q ] && printf 'NV Power Mode: MAXN\\n0\\n'\n")
    (bin_dir / "jetson_clocks").write_text("#!/bin/sh\necho 'only root can do that' >&2\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    state = runner.device_state()
    assert state["jetson"] == {"power_mode": {"name": "MAXN", "id": 0}, "jetson_clocks": None}
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(runner, "_JETSON_TOOLS", {"nvpmodel": (), "jetson_clocks": ()})
    assert runner.device_state()["jetson"] is None  # not a Jetson: null, no crash


# -- whole runner jobs with the stand-in trtexec -----------------------------------------------


def test_benchmark_job_times_with_trtexec_and_reuses_the_engine(runner, fake_trtexec, onnx_model, tmp_path):
    _path, calls = fake_trtexec
    job = dict(model=str(onnx_model), format="onnx", runtimes=["tensorrt", "onnxruntime"], precision="fp16",
               runs=7, engine_cache=str(tmp_path / "job-cache"))
    code, result = run_main(runner, write_job(tmp_path / "first", **job))
    assert code == 0 and result["ok"], result["error"]
    runtime = result["runtime"]
    assert (runtime["name"], runtime["version"], runtime["precision"]) == ("tensorrt", "10.6.0", "fp16")
    assert runtime["engine"]["cache_hit"] is False and runtime["engine"]["path"].startswith(str(tmp_path / "job-cache"))
    assert result["samples_ms"] == [FAKE_LATENCY_MS] * 7  # trtexec's per-query latencies, as it exported them
    assert result["warmup_ms"] == FAKE_WARMUP_LATENCIES
    assert runtime["summary"]["throughput_qps"] == 790.5 and runtime["summary"]["latency"]["median"] == 1.25
    assert result["timings_ms"]["first"] > 0 and result["model"]["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert any("timed by trtexec" in n for n in result["notes"]) and any("built in" in n for n in result["notes"])
    timing = [c for c in calls() if any(a.startswith("--exportTimes=") for a in c)]
    assert len(timing) == 1 and "--iterations=7" in timing[0] and "--warmUp=200" in timing[0]

    code, again = run_main(runner, write_job(tmp_path / "second", **job))
    assert code == 0 and again["ok"], again["error"]
    assert again["runtime"]["engine"]["cache_hit"] is True
    assert again["runtime"]["engine"]["path"] == runtime["engine"]["path"]
    assert len(builds(calls())) == 1  # the second run built nothing
    assert any("reused from the cache" in n for n in again["notes"])


def test_outputs_job_through_trtexec_matches_onnxruntime(runner, fake_trtexec, onnx_dynamic, tmp_path):
    """Inputs go to trtexec as raw .bin files and come back from --exportOutput: the stand-in runs
    them with ONNX Runtime, so any mix-up of names, shapes, dtypes or order shows here."""
    x = np.random.RandomState(3).standard_normal((3,) + INPUT_SHAPE[1:]).astype(np.float32)
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    np.savez(run_dir / "inputs.npz", x=x)
    write_job(run_dir, mode="outputs", model=str(onnx_dynamic), format="onnx", runtimes=["tensorrt"],
              inputs="inputs.npz", save_outputs="outputs.npz")
    code, result = run_main(runner, run_dir)
    assert code == 0 and result["ok"], result["error"]
    assert result["runtime"]["precision"] == "fp32"  # no job precision, no metadata: fp32
    assert result["outputs"]["batch"] == 1  # the engine was built for batch 1
    assert any("dynamic dims = 1" in n for n in result["notes"])
    got = np.load(run_dir / "outputs.npz")["logits"]
    expected = runner.open_model(onnx_dynamic, "onnx", runtimes=["onnxruntime"], threads=1).run({"x": x})[0]
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert all("--loadInputs=x:" in " ".join(c) for c in calls_running(fake_trtexec))


def calls_running(fake):
    return [c for c in fake[1]() if any(a.startswith("--loadEngine=") for a in c)]


def test_job_precision_must_be_known(runner, fake_trtexec, onnx_model, tmp_path):
    run_dir = write_job(tmp_path / "run", model=str(onnx_model), format="onnx", runtimes=["tensorrt"],
                        precision="int3")
    code, result = run_main(runner, run_dir)
    assert code == 1 and result["error"]["kind"] == "bad_job" and "int3" in result["error"]["message"]


# -- profiles and provisioning -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-orin-nano"])
def test_jetson_profiles_prefer_tensorrt_which_provision_never_installs(name):
    from edgekit.devices import get
    from edgekit.errors import UsageError
    from edgekit.provision import default_runtimes, runtime_requirements

    profile = get(name)
    assert profile.runtimes["onnx"] == ["tensorrt", "onnxruntime"]
    assert "tensorrt" not in default_runtimes(profile) and "onnxruntime" in default_runtimes(profile)
    with pytest.raises(UsageError, match="JetPack"):
        runtime_requirements(["tensorrt"])  # the PyPI tensorrt wheels are not Jetson's
