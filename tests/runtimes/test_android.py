"""The runner on Android (Termux): Python >= 3.13 there says ``sys.platform == "android"``.

Each test runs the real runner in a fresh process whose ``sys.platform`` was set to
"android" before the runner starts (this host cannot run Android's Python). Termux's
``python-tflite-runtime`` is stood in for by a ``tflite_runtime`` package that re-exports
LiteRT's interpreter: the same ``Interpreter`` API under the module name Termux installs, so
the model really runs in LiteRT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.resources import runner_path

from .conftest import INPUT_SHAPE

AS_ANDROID = ("import runpy, sys; sys.platform = 'android'; runner = sys.argv.pop(1); sys.argv[0] = runner; "
              "runpy.run_path(runner, run_name='__main__')")
AS_LINUX = AS_ANDROID.replace("sys.platform = 'android'; ", "")

TERMUX_STANDIN_VERSION = "2.20.0"  # Termux's python-tflite-runtime version (wave2-facts.md)


def run_runner(run_dir: Path, *args: str, android: bool = True, pythonpath: Path | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", AS_ANDROID if android else AS_LINUX, str(runner_path()),
                           *args, str(run_dir)], capture_output=True, text=True, env=env, timeout=300)
    result = json.loads((run_dir / "result.json").read_text())
    assert proc.returncode == (0 if result["ok"] else 1), proc.stderr
    return result


def write_job(run_dir: Path, model: Path, fmt: str, **extra) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / model.name).write_bytes(model.read_bytes())
    job = {"schema_version": 1, "mode": "benchmark", "model": model.name, "format": fmt, "warmup": 1,
           "runs": 5, "threads": 1}
    job.update(extra)
    (run_dir / "job.json").write_text(json.dumps(job))
    return run_dir


@pytest.fixture(scope="module")
def termux_tflite(tmp_path_factory) -> Path:
    """A folder holding the ``tflite_runtime`` stand-in (see the module doc)."""
    pytest.importorskip("ai_edge_litert")
    root = tmp_path_factory.mktemp("termux-site")
    package = root / "tflite_runtime"
    package.mkdir()
    (package / "__init__.py").write_text(f"__version__ = {TERMUX_STANDIN_VERSION!r}\n")
    (package / "interpreter.py").write_text("from ai_edge_litert.interpreter import Interpreter, load_delegate\n")
    return root


def test_probe_and_benchmark_work_as_android(onnx_model, tmp_path):
    (tmp_path / "probe").mkdir()
    probe = run_runner(tmp_path / "probe", "--probe")
    assert probe["ok"]
    device = probe["device"]
    assert device["system"] == "Android" and device["cores"] == len(os.sched_getaffinity(0))
    assert device["memory_total_kib"] > 0 and device["machine"]
    assert set(probe["state_before"]) == {"governor", "cur_freq_khz", "max_freq_khz", "temperature_c", "throttled",
                                          "jetson"}
    result = run_runner(write_job(tmp_path / "bench", onnx_model, "onnx"))
    assert result["ok"] and len(result["samples_ms"]) == 5
    assert result["runtime"]["name"] == "onnxruntime" and result["runtime"]["threads"] == 1
    memory = result["memory"]
    assert 0 < memory["baseline_rss_kib"] <= memory["peak_rss_kib"]  # /proc/self/status reads as on Linux


@pytest.mark.tflite
def test_android_prefers_termuxs_tflite_runtime(runner, tflite_model, tiny_model, termux_tflite, tmp_path):
    x = np.random.RandomState(7).standard_normal(INPUT_SHAPE).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", **{runner.open_model(tflite_model, "tflite").inputs[0]["name"]: x})
    jobs = {}
    for android in (True, False):
        run_dir = write_job(tmp_path / f"android-{android}", tflite_model, "tflite", mode="outputs",
                            inputs="inputs.npz", save_outputs="outputs.npz")
        (run_dir / "inputs.npz").write_bytes((tmp_path / "inputs.npz").read_bytes())
        jobs[android] = (run_runner(run_dir, android=android, pythonpath=termux_tflite), run_dir)
    result, run_dir = jobs[True]
    assert result["ok"] and result["runtime"]["name"] == "tflite_runtime"
    assert result["runtime"]["version"] == TERMUX_STANDIN_VERSION
    assert not any("not importable" in note for note in result["notes"])  # ai_edge_litert never tried
    with np.load(run_dir / "outputs.npz") as saved:
        np.testing.assert_allclose(saved[saved.files[0]], tiny_model[1](x), atol=1e-4)
    assert jobs[False][0]["runtime"]["name"] == "ai_edge_litert"  # elsewhere LiteRT stays first


@pytest.mark.tflite
def test_android_falls_back_to_tflite_runtime_without_ai_edge_litert(tflite_model, termux_tflite, tmp_path):
    """A job naming both (a profile written for pi4) on a phone without ai_edge_litert."""
    run_dir = write_job(tmp_path / "run", tflite_model, "tflite", runtimes=["ai_edge_litert", "tflite_runtime"])
    blocked = tmp_path / "blocked" / "ai_edge_litert"
    blocked.mkdir(parents=True)
    # the stand-in keeps its own reference to LiteRT's interpreter; only the name is absent
    (blocked / "__init__.py").write_text("raise ImportError('No module named ai_edge_litert (Termux has none)')\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "tflite_runtime").symlink_to(termux_tflite / "tflite_runtime")
    (site / "sitecustomize.py").write_text(
        "import tflite_runtime.interpreter, sys\n"
        "for name in [n for n in sys.modules if n.split('.')[0] == 'ai_edge_litert']:\n"
        "    del sys.modules[name]\n"
        f"sys.path.insert(0, {str(blocked.parent)!r})\n")
    result = run_runner(run_dir, pythonpath=site)
    assert result["ok"] and result["runtime"]["name"] == "tflite_runtime"
    assert any(note.startswith("not importable: ai_edge_litert") for note in result["notes"])


def test_default_runtime_order_follows_the_platform(runner, monkeypatch):
    assert runner.default_runtimes("tflite") == ["ai_edge_litert", "tflite_runtime", "tensorflow"]
    monkeypatch.setattr(sys, "platform", "android")
    assert runner.is_android()
    assert runner.default_runtimes("tflite") == ["tflite_runtime", "ai_edge_litert", "tensorflow"]
    assert runner.default_runtimes("onnx") == ["onnxruntime", "tensorrt"]


SD8GEN2_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: {part}\n\n"
    for i, part in enumerate(["0xd46"] * 3 + ["0xd4d"] * 2 + ["0xd47"] * 2 + ["0xd4e"])
) + "Hardware\t: Qualcomm Technologies, Inc KALAMA\n"


def test_a_phones_big_little_cores_are_all_named(runner):
    assert runner.cpu_model_from_cpuinfo(SD8GEN2_CPUINFO) == (
        "3x Cortex-A510 + 2x Cortex-A715 + 2x Cortex-A710 + 1x Cortex-X3")
    unknown_core = SD8GEN2_CPUINFO.replace("0xd4e", "0xfff")
    assert runner.cpu_model_from_cpuinfo(unknown_core) == "Qualcomm Technologies, Inc KALAMA"
