#!/usr/bin/env python3
"""edgekit runner: run one model on this machine and write what happened to result.json.

Contract (docs/runner-protocol.md is the full text):

    python3 edgekit_runner.py RUN_DIR           reads RUN_DIR/job.json, writes RUN_DIR/result.json
    python3 edgekit_runner.py --probe RUN_DIR   writes device facts + importable runtimes

* job.json "mode": benchmark (latency + memory), outputs (outputs for every input sample, for
  parity) or evaluate (accuracy over an eval set).
* result.json is ALWAYS written (atomically: a temp file, then os.replace), also on failure.
  Exit status: 0 when result["ok"] is true, 1 otherwise, 2 for a bad command line (then no
  result can be written).
* Failures are data: result["error"] = {"kind", "message"[, "traceback"]} with kind one of
  runtime_missing, model_load, bad_input, bad_job, inference, out_of_memory, internal.
* Nothing is unpickled: .npz/.npy files are read with allow_pickle=False.
* Latencies are raw per-inference samples (time.perf_counter around the runtime's own
  run/invoke call); the host computes the statistics.

Rules for this file (it is copied to devices as it is):
* One file. Standard library + numpy + one inference runtime. It never imports edgekit.
* Python >= 3.6: no walrus, no dataclasses, no `from __future__ import annotations`, no
  positional-only parameters, no f-string `=`, no subprocess capture_output/text
  (checked by `vermin -t=3.6-` in tests/runtimes/test_runner.py).
* Every device fact that cannot be read is null, never a crash.

The host imports this same file as a module (edgekit.resources.runner_module()) and uses
open_model(), RunnerError, device_facts(), device_state() and main(argv).
"""

import glob
import hashlib
import importlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import numpy as np
except ImportError:  # reported as runtime_missing by main()
    np = None

try:
    import resource
except ImportError:  # not on Windows
    resource = None

SCHEMA_VERSION = 1
RUNNER_VERSION = "1.0"

ERROR_KINDS = (
    "runtime_missing",
    "model_load",
    "bad_input",
    "bad_job",
    "inference",
    "out_of_memory",
    "internal",
)

# Runtimes per model format, in the default order of preference (on Android, see
# default_runtimes: Termux packages tflite_runtime, and no ai_edge_litert build runs there).
# "tensorrt" (Jetson) is not a Python module: trtexec builds and runs an engine from the .onnx, see
# the TensorRT section below; device profiles put it first where JetPack ships it.
FORMAT_RUNTIMES = {
    "onnx": ("onnxruntime", "tensorrt"),
    "tflite": ("ai_edge_litert", "tflite_runtime", "tensorflow"),
    "executorch": ("executorch",),
}
KNOWN_RUNTIMES = ("onnxruntime", "tensorrt", "ai_edge_litert", "tflite_runtime", "tensorflow", "executorch")

DEFAULT_MAX_RUNS = 100000
MODES = ("benchmark", "outputs", "evaluate")

# Messages of allocation failures in Python, C++ runtimes and the dynamic loader.
_OOM_PATTERNS = (
    "cannot allocate memory",
    "bad_alloc",
    "bad allocation",
    "failed to allocate",
    "out of memory",
    "failed to map segment",
    "memoryerror",
)


class RunnerError(Exception):
    """A failure with a kind from ERROR_KINDS; main() writes it to result.json."""

    def __init__(self, kind, message, traceback_text=None):
        Exception.__init__(self, message)
        self.kind = kind if kind in ERROR_KINDS else "internal"
        self.message = message
        self.traceback = traceback_text

    def to_json(self):
        error = {"kind": self.kind, "message": self.message}
        if self.traceback:
            error["traceback"] = self.traceback
        return error


def _looks_like_oom(exc):
    if isinstance(exc, MemoryError):
        return True
    text = (type(exc).__name__ + ": " + str(exc)).lower()
    for pattern in _OOM_PATTERNS:
        if pattern in text:
            return True
    return False


def _wrap(kind, what, exc):
    """A RunnerError for `exc`; allocation failures become out_of_memory."""
    if isinstance(exc, RunnerError):
        return exc
    if _looks_like_oom(exc):
        kind = "out_of_memory"
    message = "{}: {}: {}".format(what, type(exc).__name__, exc)
    return RunnerError(kind, message, traceback.format_exc())


# ---------------------------------------------------------------------------------------------
# Small helpers (all tolerant of missing files)


def _read_text(path, limit=1 << 20):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except Exception:
        return None


def _read_int(path):
    text = _read_text(path, 4096)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _status_kib(field):
    """A `VmXXX:  1234 kB` value of /proc/self/status in KiB, or None."""
    text = _read_text("/proc/self/status")
    if not text:
        return None
    match = re.search(r"^" + field + r":\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else None


def _maxrss_kib():
    if resource is None:
        return None
    try:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except Exception:
        return None
    return int(value // 1024) if sys.platform == "darwin" else int(value)


def rss_high_water_kib():
    """Peak resident set size of this process so far, KiB.

    VmHWM first: ru_maxrss also counts the image that exec'd this process (after a fork from a
    big parent it reports the parent's size), VmHWM belongs to this process's memory only.
    """
    value = _status_kib("VmHWM")
    return value if value is not None else _maxrss_kib()


def _affinity_count():
    try:
        return len(os.sched_getaffinity(0))
    except Exception:
        return os.cpu_count()


def is_android():
    """True on Android: sys.platform is "android" from Python 3.13 on, "linux" before (Termux's
    3.12), where only sys.getandroidapilevel() (Android builds since 3.7) tells."""
    return sys.platform == "android" or hasattr(sys, "getandroidapilevel")


def _jsonable(value):
    if np is not None:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    raise TypeError("not JSON serializable: {!r}".format(type(value)))


def write_json_atomic(path, data):
    tmp = "{}.tmp-{}".format(path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, default=_jsonable)
        handle.write("\n")
        handle.flush()
        try:
            os.fsync(handle.fileno())
        except OSError:
            pass
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Device facts and state

_ARM_PARTS = {
    # (implementer, part) -> core name, from the Arm TRMs / Linux arch/arm64/include/asm/cputype.h
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd44"): "Cortex-X1",
    ("0x41", "0xd46"): "Cortex-A510",
    ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd48"): "Cortex-X2",
    ("0x41", "0xd4b"): "Cortex-A78C",
    ("0x41", "0xd4d"): "Cortex-A715",
    ("0x41", "0xd4e"): "Cortex-X3",
    ("0x41", "0xd80"): "Cortex-A520",
    ("0x41", "0xd81"): "Cortex-A720",
    ("0x41", "0xd82"): "Cortex-X4",
    ("0x41", "0xd85"): "Cortex-X925",
    ("0x41", "0xd87"): "Cortex-A725",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}


def _cpuinfo_field(text, name):
    match = re.search(r"^" + re.escape(name) + r"\s*:\s*(.+?)\s*$", text, re.M)
    return match.group(1) if match else None


def cpu_model_from_cpuinfo(text):
    """CPU model from /proc/cpuinfo text: "model name", else the Arm core, else Hardware/Model."""
    if not text:
        return None
    name = _cpuinfo_field(text, "model name")
    if name:
        return name
    cores = _arm_cores(text)
    if cores and all(core for core, _count in cores):
        if len(cores) == 1:
            return cores[0][0]
        # big.LITTLE (phones, some boards): every kind of core, as SoC makers list them
        return " + ".join("{}x {}".format(count, core) for core, count in cores)
    return _cpuinfo_field(text, "Hardware") or _cpuinfo_field(text, "Model")


def _arm_cores(text):
    """[(core name or None, count)] over the processor blocks of an Arm /proc/cpuinfo."""
    counts = []
    for block in re.split(r"\n\s*\n", text):
        implementer = _cpuinfo_field(block, "CPU implementer")
        part = _cpuinfo_field(block, "CPU part")
        if not (implementer and part):
            continue
        core = _ARM_PARTS.get((implementer.lower(), part.lower()))
        for entry in counts:
            if entry[0] == core:
                entry[1] += 1
                break
        else:
            counts.append([core, 1])
    return [(core, count) for core, count in counts]


def _cpuinfo_arch(text):
    """"x86" or "arm" from what /proc/cpuinfo shows, or None."""
    if not text:
        return None
    if re.search(r"^vendor_id\s*:\s*(GenuineIntel|AuthenticAMD|HygonGenuine)", text, re.M):
        return "x86"
    if re.search(r"^flags\s*:.*\bsse2?\b", text, re.M):
        return "x86"
    if re.search(r"^CPU implementer\s*:", text, re.M):
        return "arm"
    return None


def detect_emulator(machine=None, cpuinfo=None):
    """"qemu" when this process runs under qemu-user, else None."""
    try:
        exe = os.readlink("/proc/self/exe")
        if "qemu" in os.path.basename(exe):
            return "qemu"
    except Exception:
        pass
    maps = _read_text("/proc/self/maps", 4 << 20)
    if maps and "qemu-" in maps:
        return "qemu"
    machine = (machine if machine is not None else platform.machine()).lower()
    cpuinfo = cpuinfo if cpuinfo is not None else _read_text("/proc/cpuinfo")
    shown = _cpuinfo_arch(cpuinfo)
    if shown is None or not machine:
        return None
    running = None
    if machine in ("x86_64", "amd64", "i386", "i486", "i586", "i686"):
        running = "x86"
    elif machine.startswith("aarch64") or machine.startswith("arm"):
        running = "arm"
    if running is not None and running != shown:
        return "qemu"
    return None


def device_facts():
    """What this machine is. Every fact that cannot be read is None."""
    facts = {
        "machine": None,
        "system": None,
        "release": None,
        "python": platform.python_version(),
        "numpy": getattr(np, "__version__", None),
        "cpu_model": None,
        "cores": None,
        "board": None,
        "memory_total_kib": None,
        "emulated_by": None,
    }
    try:
        uname = platform.uname()
        facts["machine"] = uname.machine or None
        facts["system"] = uname.system or None
        facts["release"] = uname.release or None
    except Exception:
        pass
    cpuinfo = _read_text("/proc/cpuinfo")
    try:
        facts["cpu_model"] = cpu_model_from_cpuinfo(cpuinfo) or platform.processor() or None
    except Exception:
        pass
    try:
        facts["cores"] = _affinity_count()
    except Exception:
        pass
    board = _read_text("/proc/device-tree/model", 4096)
    if board:
        facts["board"] = board.replace("\x00", "").strip() or None
    elif cpuinfo:
        facts["board"] = _cpuinfo_field(cpuinfo, "Model")
    if is_android():
        _android_facts(facts)
    meminfo = _read_text("/proc/meminfo", 65536)
    if meminfo:
        match = re.search(r"^MemTotal:\s+(\d+)\s+kB", meminfo, re.M)
        if match:
            facts["memory_total_kib"] = int(match.group(1))
    try:
        facts["emulated_by"] = detect_emulator(facts["machine"] or "", cpuinfo)
    except Exception:
        pass
    return facts


def _android_facts(facts):
    """The phone's name and Android release (platform.android_ver, Python >= 3.13)."""
    facts["system"] = "Android"
    android_ver = getattr(platform, "android_ver", None)
    if android_ver is None:
        return
    try:
        info = android_ver()
    except Exception:
        return
    release = getattr(info, "release", None)
    if release:
        facts["release"] = "Android {} (kernel {})".format(release, facts["release"]) \
            if facts["release"] else "Android {}".format(release)
    name = " ".join(p for p in (getattr(info, "manufacturer", ""), getattr(info, "model", "")) if p)
    if name:
        facts["board"] = name


_THROTTLE_BITS = (
    ("under_voltage", 0),
    ("freq_capped", 1),
    ("throttled", 2),
    ("soft_temp_limit", 3),
)


def decode_throttled(value):
    """Decode `vcgencmd get_throttled` bits (Raspberry Pi) into now / since boot flags."""
    now = {}
    since = {}
    flags = []
    for name, bit in _THROTTLE_BITS:
        now[name] = bool(value & (1 << bit))
        since[name] = bool(value & (1 << (bit + 16)))
        if now[name]:
            flags.append(name + " now")
        if since[name]:
            flags.append(name + " since boot")
    return {"raw": hex(value), "any": bool(flags), "flags": flags, "now": now,
            "since_boot": since}


def _vcgencmd():
    found = shutil.which("vcgencmd")
    if found:
        return found
    for candidate in ("/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def read_throttled():
    binary = _vcgencmd()
    if not binary:
        return None
    try:
        proc = subprocess.run(
            [binary, "get_throttled"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=5,
        )
    except Exception:
        return None
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", proc.stdout or "")
    if not match:
        return None
    return decode_throttled(int(match.group(1), 0))


# Jetson: L4T installs nvpmodel in /usr/sbin and jetson_clocks in /usr/bin, often outside a
# non-root user's PATH, so the usual places are tried too.
_JETSON_TOOLS = {
    "nvpmodel": ("/usr/sbin/nvpmodel", "/usr/bin/nvpmodel"),
    "jetson_clocks": ("/usr/bin/jetson_clocks", "/usr/sbin/jetson_clocks"),
}


def _jetson_tool(name):
    found = shutil.which(name)
    if found:
        return found
    for candidate in _JETSON_TOOLS[name]:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _tool_output(argv, timeout=5):
    """stdout + stderr of a short command, or None (missing, failing, hanging: never a crash)."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, universal_newlines=True, timeout=timeout)
    except Exception:
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_nvpmodel(text):
    """{"name": "MAXN", "id": 0} from `nvpmodel -q` ("NV Power Mode: MAXN", then the mode id
    on a line of its own), or None. The id is None when only the name is printed."""
    if not text:
        return None
    match = re.search(r"NV Power Mode\s*:\s*(\S[^\n]*?)\s*$", text, re.M)
    if not match:
        return None
    after = text[match.end():]
    mode_id = re.search(r"^\s*(\d+)\s*$", after, re.M)
    return {"name": match.group(1), "id": int(mode_id.group(1)) if mode_id else None}


def parse_jetson_clocks(text):
    """`jetson_clocks --show`: {"on", "gpu": {min/max/cur Hz}, "emc", "cpu_pinned"}, or None.

    jetson_clocks pins every CPU, the GPU and the EMC (memory) clock at its maximum: it is "on"
    when each of them shows MinFreq == MaxFreq (and the EMC an override), "off" otherwise.
    """
    if not text:
        return None
    clocks = {}
    for line in text.splitlines():
        head = line.split(":", 1)[0].strip() if re.match(r"^\s*cpu\d+:", line) else line.split(" ", 1)[0]
        freqs = dict((k, int(v)) for k, v in re.findall(r"(MinFreq|MaxFreq|CurrentFreq|FreqOverride)=(\d+)", line))
        if "MinFreq" in freqs and "MaxFreq" in freqs:
            clocks[head] = freqs
    if not clocks:
        return None
    cpus = [v for k, v in clocks.items() if k.startswith("cpu")]
    gpu = clocks.get("GPU")
    emc = clocks.get("EMC")
    pinned = [c["MinFreq"] == c["MaxFreq"] for c in cpus + ([gpu] if gpu else [])]
    if emc is not None:
        pinned.append(emc["MinFreq"] == emc["MaxFreq"] or emc.get("FreqOverride") == 1)
    return {
        "on": all(pinned),
        "cpu_pinned": all(c["MinFreq"] == c["MaxFreq"] for c in cpus) if cpus else None,
        "gpu": _freqs(gpu),
        "emc": _freqs(emc),
    }


def _freqs(entry):
    if entry is None:
        return None
    return {"min_hz": entry["MinFreq"], "max_hz": entry["MaxFreq"], "cur_hz": entry.get("CurrentFreq")}


def read_jetson():
    """Jetson power mode (nvpmodel -q) and jetson_clocks state; None off a Jetson.

    `jetson_clocks --show` reads clocks that need root on some L4T releases: then its part is None
    (never sudo: a password prompt would hang the run).
    """
    nvpmodel = _jetson_tool("nvpmodel")
    clocks = _jetson_tool("jetson_clocks")
    if not nvpmodel and not clocks:
        return None
    return {
        "power_mode": parse_nvpmodel(_tool_output([nvpmodel, "-q"])) if nvpmodel else None,
        "jetson_clocks": parse_jetson_clocks(_tool_output([clocks, "--show"])) if clocks else None,
    }


def device_state():
    """Governor, CPU0 frequency, hottest thermal zone (degC), Raspberry Pi throttling, Jetson
    power mode and clocks."""
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    governor = _read_text(base + "scaling_governor", 256)
    cur = _read_int(base + "scaling_cur_freq")
    if cur is None:
        cur = _read_int(base + "cpuinfo_cur_freq")
    top = _read_int(base + "scaling_max_freq")
    if top is None:
        top = _read_int(base + "cpuinfo_max_freq")
    temps = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        value = _read_int(path)
        if value is not None and -50000 < value < 200000:
            temps.append(value / 1000.0)
    return {
        "governor": governor.strip() if governor else None,
        "cur_freq_khz": cur,
        "max_freq_khz": top,
        "temperature_c": round(max(temps), 1) if temps else None,
        "throttled": read_throttled(),
        "jetson": read_jetson(),
    }


# ---------------------------------------------------------------------------------------------
# Runtimes


def _import_one(name):
    """(module providing the API, version) for one runtime name; raises on failure."""
    if name == "onnxruntime":
        module = importlib.import_module("onnxruntime")
        return module, getattr(module, "__version__", None)
    if name == "tensorrt":
        tool = find_trtexec()  # ImportError when JetPack's trtexec is not there
        return tool, tool.version
    if name == "ai_edge_litert":
        module = importlib.import_module("ai_edge_litert.interpreter")
        top = sys.modules.get("ai_edge_litert")
        return module, getattr(top, "__version__", None)
    if name == "tflite_runtime":
        module = importlib.import_module("tflite_runtime.interpreter")
        top = sys.modules.get("tflite_runtime")
        return module, getattr(top, "__version__", None)
    if name == "tensorflow":
        top = importlib.import_module("tensorflow")
        return top.lite, getattr(top, "__version__", None)
    if name == "executorch":
        module = importlib.import_module("executorch.runtime")
        try:
            version = importlib.import_module("executorch.version").__version__
        except Exception:
            version = None
        return module, version
    raise ImportError("unknown runtime {!r}".format(name))


class ImportedRuntime(object):
    def __init__(self, name, module, version, notes, seconds, was_loaded):
        self.name = name
        self.module = module
        self.version = version
        self.notes = notes
        self.seconds = seconds
        self.was_loaded = was_loaded


def default_runtimes(fmt):
    """The runtimes tried for `fmt` when the job names none, most preferred first.

    On Android tflite_runtime comes first: Termux builds it (python-tflite-runtime), while
    ai_edge_litert has no Android build, so trying it first would only add a failure note.
    """
    names = list(FORMAT_RUNTIMES[fmt])
    if is_android() and "tflite_runtime" in names:
        names.remove("tflite_runtime")
        names.insert(0, "tflite_runtime")
    return names


def import_runtime(fmt, runtimes=None):
    """Import the first runtime that can run `fmt` (restricted to `runtimes` when given)."""
    if fmt not in FORMAT_RUNTIMES:
        raise RunnerError("bad_job", "unknown model format {!r} (known: {})".format(
            fmt, ", ".join(sorted(FORMAT_RUNTIMES))))
    candidates = default_runtimes(fmt)
    if runtimes:
        unknown = [r for r in runtimes if r not in KNOWN_RUNTIMES]
        if unknown:
            raise RunnerError("bad_job", "unknown runtimes {} (known: {})".format(
                unknown, ", ".join(KNOWN_RUNTIMES)))
        candidates = [r for r in runtimes if r in FORMAT_RUNTIMES[fmt]]
        if not candidates:
            raise RunnerError("runtime_missing", "none of the requested runtimes ({}) runs .{} "
                              "models (those are: {})".format(", ".join(runtimes), fmt,
                                                             ", ".join(FORMAT_RUNTIMES[fmt])))
    failures = []
    for name in candidates:
        was_loaded = name.split(".")[0] in sys.modules and name != "tensorflow"
        start = time.perf_counter()
        try:
            module, version = _import_one(name)
        except Exception as exc:  # ImportError, or a binary built against another numpy
            if _looks_like_oom(exc):
                raise _wrap("out_of_memory", "importing " + name, exc)
            failures.append("{} ({}: {})".format(name, type(exc).__name__, str(exc).strip()[:300]))
            continue
        seconds = time.perf_counter() - start
        notes = []
        if failures:
            notes.append("not importable: {}; used {}".format("; ".join(failures), name))
        return ImportedRuntime(name, module, version, notes, seconds, was_loaded)
    raise RunnerError("runtime_missing", "no runtime for .{} models could be imported: {}".format(
        fmt, "; ".join(failures)))


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

_QUANTIZED_TYPES = ("int8", "uint8", "int16")


class _Tensor(object):
    """One input or output: name, shape (None for dynamic dims), numpy dtype, quantization."""

    def __init__(self, name, shape, dtype, quant=None, index=None):
        self.name = name
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.quant = quant  # (scale ndarray|float, zero_point ndarray|int, axis|None) or None
        self.index = index

    def describe(self):
        quant = None
        if self.quant is not None:
            scale, zero, axis = self.quant
            quant = {"scale": _plain(scale), "zero_point": _plain(zero)}
            if axis is not None:
                quant["axis"] = axis
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name,
                "quantization": quant}


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size > 1 else value.reshape(-1)[0].item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _quant_from_job(entry, dtype):
    """(scale, zero_point, axis) from an io_quantization entry, or None.

    scale/zero_point are numbers, or lists for per-axis quantization with "axis" (or TFLite's
    "quantized_dimension") naming the axis.
    """
    if not entry:
        return None
    if not isinstance(entry, dict):
        raise RunnerError("bad_job", "io_quantization entries must be objects: {!r}".format(entry))
    try:
        if isinstance(entry.get("scale"), (list, tuple)):
            scale = np.asarray(entry["scale"], dtype=np.float32)
            zero = np.asarray(entry.get("zero_point") or [0] * scale.size, dtype=np.int64)
            axis = int(entry.get("axis", entry.get("quantized_dimension", 0)))
            if zero.shape != scale.shape:
                raise ValueError("zero_point and scale differ in length")
        else:
            scale = float(entry["scale"])
            zero = int(entry.get("zero_point", 0) or 0)
            axis = None
    except (KeyError, TypeError, ValueError):
        raise RunnerError("bad_job", "io_quantization entries need a numeric scale and zero_point: "
                          "{!r}".format(entry))
    if entry.get("dtype") and np.dtype(entry["dtype"]) != dtype:
        raise RunnerError("bad_job", "io_quantization says dtype {} but the model has {}".format(
            entry["dtype"], dtype.name))
    return (scale, zero, axis)


def _shapes_compatible(spec_shape, shape):
    if len(spec_shape) != len(shape):
        return False
    for want, got in zip(spec_shape, shape):
        if want is not None and want != got:
            return False
    return True


def _scale_and_zero(scale, zero, tensor, axis):
    """float32 scale and zero point; per-channel ones (1-D, with an axis) shaped to broadcast over tensor."""
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.asarray(zero, dtype=np.float32)
    if axis is not None and scale.ndim == 1:
        view = [1] * tensor.ndim
        view[axis] = -1
        scale = scale.reshape(view)
        zero = zero.reshape(view)
    return scale, zero


def quantize(x, scale, zero, dtype, axis=None):
    info = np.iinfo(dtype)
    scale, zero = _scale_and_zero(scale, zero, x, axis)
    q = np.round(np.asarray(x, dtype=np.float32) / scale) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero, axis=None):
    scale, zero = _scale_and_zero(scale, zero, q, axis)
    return (q.astype(np.float32) - zero) * scale


class Session(object):
    """A loaded model behind one runtime.

    run(feeds) takes float arrays (quantized here for int8/uint8 inputs) and returns float
    arrays (dequantized); prepare/run_native split that for timing; bind() gives the zero-argument
    call the timing loop measures.
    """

    def __init__(self):
        self.runtime = {}
        self.notes = []
        self._in = []
        self._out = []

    @property
    def inputs(self):
        return [t.describe() for t in self._in]

    @property
    def outputs(self):
        return [t.describe() for t in self._out]

    def prepare(self, feeds):
        """{name: float ndarray} -> {name: ndarray of the model's dtype} (quantized)."""
        if not isinstance(feeds, dict):
            raise RunnerError("bad_input", "feeds must map input names to arrays")
        names = [t.name for t in self._in]
        extra = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if missing or extra:
            raise RunnerError("bad_input", "inputs do not match the model: missing {}, unexpected "
                              "{} (the model's inputs: {})".format(missing, extra, names))
        native = {}
        for spec in self._in:
            arr = np.asarray(feeds[spec.name])
            if not _shapes_compatible(spec.shape, arr.shape):
                raise RunnerError("bad_input", "input {!r} has shape {} but the model takes {} "
                                  "(None: any size)".format(spec.name, list(arr.shape), spec.shape))
            if arr.dtype == object:
                raise RunnerError("bad_input", "input {!r} is an object array".format(spec.name))
            if arr.dtype == spec.dtype:
                out = arr
            elif spec.quant is not None and arr.dtype.kind == "f":
                scale, zero, axis = spec.quant
                out = quantize(arr, scale, zero, spec.dtype, axis)
            elif arr.dtype.kind in "fiub" and np.can_cast(arr.dtype, spec.dtype, "same_kind"):
                out = arr.astype(spec.dtype)
            elif arr.dtype.kind in "iub" and spec.dtype.kind in "iuf":
                out = arr.astype(spec.dtype)
            else:
                raise RunnerError("bad_input", "input {!r} is {} but the model takes {}".format(
                    spec.name, arr.dtype.name, spec.dtype.name))
            native[spec.name] = np.ascontiguousarray(out)
        return native

    def dequantize_outputs(self, raw):
        result = []
        for spec, arr in zip(self._out, raw):
            if spec.quant is not None and arr.dtype.kind in "iu":
                scale, zero, axis = spec.quant
                result.append(dequantize(arr, scale, zero, axis))
            elif arr.dtype == np.float16:
                result.append(arr.astype(np.float32))
            else:
                result.append(arr)
        return result

    def run(self, feeds):
        """Float feeds in, float outputs out (one ndarray per model output, in order)."""
        return self.dequantize_outputs(self.run_native(self.prepare(feeds)))

    def run_native(self, native):
        raise NotImplementedError

    def bind(self, native, outputs_like=None):
        """A zero-argument callable running one inference on `native`, as cheap as possible."""
        raise NotImplementedError

    def bound_outputs(self):
        """Raw outputs of the last call of the bound callable."""
        raise NotImplementedError


# A u8 x s8 MatMulInteger as serialized ONNX (opset 10): a 1x16 row of 255 times a 16x1 column of
# 127, exactly 518160; x86 kernels without VNNI sum pairs of products in saturating int16 first
# (VPMADDUBSW) and return 262136. Measuring beats reading CPU flags: qemu and hypervisors lie.
_SATURATION_PROBE = ("CAUSADpkChgKAWEKAWISAXkiDU1hdE11bEludGVnZXISAXAqGwgQCAEQA0IBYkoQf39/f39/f39/f39/f39/f1oTCgFhEg4K"
                     "DAgCEggKAggBCgIIEGITCgF5Eg4KDAgGEggKAggBCgIIAUIECgAQCg==")
_SATURATES = {}


def int8_kernels_saturate(ort):
    """True when this ONNX Runtime's u8 x s8 kernels saturate on this CPU (x86 without VNNI)."""
    if "result" not in _SATURATES:
        result = False
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            import base64

            try:
                probe = ort.InferenceSession(base64.b64decode(_SATURATION_PROBE),
                                             providers=["CPUExecutionProvider"])
                out = probe.run(None, {"a": np.full((1, 16), 255, dtype=np.uint8)})[0]
                result = int(out.ravel()[0]) != 255 * 127 * 16
            except Exception:
                result = False
        _SATURATES["result"] = result
    return _SATURATES["result"]


def uint8_weights(model_bytes):
    """`model_bytes` with every int8 weight of a DequantizeLinear stored as uint8 plus 128 and its
    zero point plus 128: the same dequantized values, run by u8 x u8 kernels, which never saturate.

    Returns (new bytes, number of weights shifted), or (None, 0) when nothing qualifies (no int8
    weights, or int8 activations share their tensors). Needs the `onnx` package.
    """
    onnx = importlib.import_module("onnx")  # optional, like the runtimes: imported by name
    numpy_helper = importlib.import_module("onnx.numpy_helper")
    try:
        model = onnx.load_from_string(model_bytes)
    except Exception:
        return None, 0  # not a readable model: the runtime says why when it loads it
    inits = {t.name: t for t in model.graph.initializer}
    int8 = onnx.TensorProto.INT8
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and len(n.input) == 3
                  and n.input[0] in inits and n.input[2] in inits and inits[n.input[0]].data_type == int8
                  and inits[n.input[2]].data_type == int8]
    zero_points = set(n.input[2] for n in weight_dqs)
    weights = set(n.input[0] for n in weight_dqs)
    for node in model.graph.node:
        if node not in weight_dqs and (zero_points.union(weights)).intersection(node.input):
            return None, 0  # an int8 tensor used elsewhere (s8 activations): leave the model as is
    for name in zero_points.union(weights):
        shifted = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
        inits[name].CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
    if not weights:
        return None, 0
    return model.SerializeToString(), len(weights)


class OrtSession(Session):
    def __init__(self, ort, version, path, providers=None, threads=None, io_quantization=None):
        Session.__init__(self)
        self._ort = ort
        requested = list(providers) if providers else ["CPUExecutionProvider"]
        available = list(ort.get_available_providers())
        chosen = []
        for name in requested:
            if name in available:
                chosen.append(name)
            else:
                self.notes.append("{} not available (available: {}): skipped".format(
                    name, ", ".join(available)))
        if not chosen:
            chosen = ["CPUExecutionProvider"]
            self.notes.append("none of the requested providers is available: using "
                              "CPUExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is None:
            # ORT's own default counts the machine's physical cores, ignoring affinity and
            # cpusets; one thread per core this process may use is what it means on a device.
            threads = _affinity_count() or 1
            self.notes.append("threads not set: using {} (the cores this process may run on)"
                              .format(threads))
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._path, self._providers, self._threads = str(path), chosen, int(threads)
        self._source = self._model_source(ort, str(path))
        try:
            self._sess = ort.InferenceSession(self._source, sess_options=options, providers=chosen)
        except Exception as exc:
            raise _wrap("model_load", "onnxruntime could not load {}".format(path), exc)
        self._note_unshifted_int8()
        used = list(self._sess.get_providers())
        fell_back = [p for p in chosen if p not in used]
        if fell_back:
            self.notes.append("{} failed to initialise: fell back to {}".format(
                ", ".join(fell_back), ", ".join(used)))
        io_quantization = io_quantization or {}
        self._in = self._specs(self._sess.get_inputs(), io_quantization.get("inputs") or {})
        self._out = self._specs(self._sess.get_outputs(), io_quantization.get("outputs") or {})
        self._output_names = [t.name for t in self._out]
        self._binding = None
        self._bound = None
        self.runtime = {"name": "onnxruntime", "version": version, "providers": used,
                        "threads": int(threads)}

    def _model_source(self, ort, path):
        """The path, or the model's bytes with uint8 weights where this CPU's int8 kernels saturate,
        so that a host computes what a device's exact int8 kernels compute."""
        if not int8_kernels_saturate(ort):
            return path
        try:
            with open(path, "rb") as handle:
                shifted, count = uint8_weights(handle.read())
        except ImportError:
            self._unshifted = True
            return path
        if shifted is None:
            return path
        self.notes.append("int8 weights run as uint8 (+128, same values): this CPU's u8 x s8 kernels "
                          "saturate (x86 without VNNI); {} weights".format(count))
        return shifted

    def _note_unshifted_int8(self):
        meta = self._sess.get_modelmeta().custom_metadata_map or {}
        if getattr(self, "_unshifted", False) and meta.get("edgekit.precision") == "int8":
            self.notes.append("this CPU's u8 x s8 int8 kernels saturate (x86 without VNNI): outputs here may "
                              "differ from a device's (install the onnx package to run the weights as uint8)")

    def _specs(self, metas, quant):
        specs = []
        for meta in metas:
            dtype = _ORT_TYPES.get(meta.type)
            if dtype is None:
                raise RunnerError("model_load", "{!r} has unsupported type {}".format(
                    meta.name, meta.type))
            shape = [d if isinstance(d, int) and d >= 0 else None for d in meta.shape]
            q = _quant_from_job(quant.get(meta.name), np.dtype(dtype))
            specs.append(_Tensor(meta.name, shape, dtype, q))
        return specs

    def run_native(self, native):
        return self._sess.run(self._output_names, native)

    def bind(self, native, outputs_like=None):
        if outputs_like is None:
            outputs_like = self.run_native(native)
        sess = self._sess
        try:
            binding = sess.io_binding()
            for name, arr in native.items():
                binding.bind_cpu_input(name, arr)
            buffers = [np.empty_like(o) for o in outputs_like]
            for name, buf in zip(self._output_names, buffers):
                binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
            sess.run_with_iobinding(binding)
        except Exception as exc:
            self.notes.append("IO binding unavailable ({}): timing session.run".format(exc))
            self._bound = None
            self._last = None
            names = self._output_names

            def invoke():
                self._last = sess.run(names, native)

            return invoke
        self._binding = binding
        self._bound = (native, buffers)  # keeps the bound memory alive
        run = sess.run_with_iobinding

        def invoke():
            run(binding)

        return invoke

    def bound_outputs(self):
        if self._bound is None:
            return list(getattr(self, "_last", None) or [])
        return [b.copy() for b in self._bound[1]]


class TfliteSession(Session):
    def __init__(self, module, runtime_name, version, path, threads=None, io_quantization=None):
        Session.__init__(self)
        try:
            if threads is None:
                self._interp = module.Interpreter(model_path=str(path))
            else:
                self._interp = module.Interpreter(model_path=str(path), num_threads=int(threads))
            self._interp.allocate_tensors()
        except Exception as exc:
            raise _wrap("model_load", "{} could not load {}".format(runtime_name, path), exc)
        io_quantization = io_quantization or {}
        self._qin = io_quantization.get("inputs") or {}
        self._qout = io_quantization.get("outputs") or {}
        self._read_details()
        self.runtime = {"name": runtime_name, "version": version, "providers": None,
                        "threads": None if threads is None else int(threads)}

    def _read_details(self):
        self._in = [self._spec(d, self._qin) for d in self._interp.get_input_details()]
        self._out = [self._spec(d, self._qout) for d in self._interp.get_output_details()]

    def _spec(self, detail, job_quant):
        dtype = np.dtype(detail["dtype"])
        signature = detail.get("shape_signature")
        if signature is None or len(signature) != len(detail["shape"]):
            signature = detail["shape"]
        shape = [int(s) if s >= 0 else None for s in signature]
        quant = _quant_from_job(job_quant.get(detail["name"]), dtype)
        if quant is None and dtype.name in _QUANTIZED_TYPES:
            params = detail.get("quantization_parameters") or {}
            scales = np.asarray(params.get("scales", []), dtype=np.float32)
            zeros = np.asarray(params.get("zero_points", []))
            if scales.size > 1:
                quant = (scales, zeros, int(params.get("quantized_dimension", 0)))
            else:
                scale, zero = detail.get("quantization", (0.0, 0))
                if scale:
                    quant = (float(scale), int(zero), None)
        spec = _Tensor(detail["name"], shape, dtype, quant, detail["index"])
        spec.current = [int(s) for s in detail["shape"]]
        return spec

    def _fit(self, native):
        """Resize inputs whose dynamic dims differ from the allocated shape."""
        resized = False
        for spec in self._in:
            shape = list(native[spec.name].shape)
            if shape != spec.current:
                try:
                    self._interp.resize_tensor_input(spec.index, shape)
                except Exception as exc:
                    raise _wrap("bad_input", "cannot resize input {!r} to {}".format(
                        spec.name, shape), exc)
                resized = True
        if resized:
            try:
                self._interp.allocate_tensors()
            except Exception as exc:
                raise _wrap("bad_input", "cannot allocate tensors for the new input shapes", exc)
            for spec, detail in zip(self._in, self._interp.get_input_details()):
                spec.current = [int(s) for s in detail["shape"]]
            for spec, detail in zip(self._out, self._interp.get_output_details()):
                spec.current = [int(s) for s in detail["shape"]]

    def _set(self, native):
        self._fit(native)
        for spec in self._in:
            self._interp.set_tensor(spec.index, native[spec.name])

    def run_native(self, native):
        self._set(native)
        self._interp.invoke()
        return [self._interp.get_tensor(spec.index) for spec in self._out]

    def bind(self, native, outputs_like=None):
        self._set(native)
        return self._interp.invoke

    def bound_outputs(self):
        return [self._interp.get_tensor(spec.index) for spec in self._out]


# ExecuTorch's ScalarType codes (MethodMeta's TensorInfo.dtype()) as numpy dtypes
_EXECUTORCH_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16",
                      6: "float32", 7: "float64", 11: "bool"}
EXECUTORCH_METADATA_METHOD = "edgekit_metadata"  # a constant method: edgekit's JSON (I/O names, precision)


class ExecutorchSession(Session):
    """A .pte program's "forward" through ExecuTorch's Python runtime (executorch.runtime).

    The runtime takes and returns torch tensors (it links torch's libraries, so torch is on the
    device anyway); numpy arrays are wrapped without a copy. Delegates (XNNPACK) are inside
    the program. Threads: the runtime's shared threadpool, reset to `threads`.
    """

    def __init__(self, module, version, path, threads=None, io_quantization=None):
        Session.__init__(self)
        self._torch = importlib.import_module("torch")  # imported by name: the runner's imports stay numpy only
        if threads is None:
            threads = _affinity_count() or 1
            self.notes.append("threads not set: using {} (the cores this process may run on)"
                              .format(threads))
        try:
            lib = importlib.import_module("executorch.extension.pybindings.portable_lib")
            lib._unsafe_reset_threadpool(int(threads))
        except Exception as exc:  # an older or differently built runtime: say so, run anyway
            self.notes.append("could not set the ExecuTorch threadpool to {} threads: {}".format(threads, exc))
        try:
            program = module.Runtime.get().load_program(str(path))
            self._method = program.load_method("forward")
            meta = self._method.metadata
            names = self._names(program)
        except Exception as exc:
            raise _wrap("model_load", "executorch could not load {}".format(path), exc)
        self._in = [self._spec(meta.input_tensor_meta(i), names.get("inputs"), i, "input")
                    for i in range(meta.num_inputs())]
        self._out = [self._spec(meta.output_tensor_meta(i), names.get("outputs"), i, "output")
                     for i in range(meta.num_outputs())]
        self._args = None
        self._last = None
        backends = []
        try:
            backends = list(module.Runtime.get().backend_registry.registered_backend_names)
        except Exception:
            pass
        self.runtime = {"name": "executorch", "version": version, "providers": backends or None,
                        "threads": int(threads)}

    @staticmethod
    def _names(program):
        """edgekit's I/O names from the program's metadata method ({} for a foreign .pte)."""
        if EXECUTORCH_METADATA_METHOD not in program.method_names:
            return {}
        try:
            text = program.load_method(EXECUTORCH_METADATA_METHOD).execute([])[0]
            return json.loads(text)
        except Exception:
            return {}

    @staticmethod
    def _spec(info, names, index, kind):
        name = names[index] if names and index < len(names) else "{}_{}".format(kind, index)
        dtype = _EXECUTORCH_DTYPES.get(int(info.dtype()), "float32")
        return _Tensor(name, [int(s) for s in info.sizes()], dtype, None, index)

    def _tensors(self, native):
        return [self._torch.from_numpy(np.ascontiguousarray(native[spec.name])) for spec in self._in]

    def _execute(self, args):
        try:
            return self._method.execute(args)
        except RuntimeError as exc:
            # the runtime logs the reason (a static shape, a dtype) on stderr, and raises a code
            raise _wrap("inference", "executorch failed to run the model (inputs {})".format(
                [list(a.shape) for a in args]), exc)

    def run_native(self, native):
        return [o.numpy() for o in self._execute(self._tensors(native))]

    def bind(self, native, outputs_like=None):
        self._args = self._tensors(native)
        method, args = self._method, self._args

        def invoke():
            self._last = method.execute(args)
        return invoke

    def bound_outputs(self):
        return [o.numpy() for o in (self._last or [])]


# ---------------------------------------------------------------------------------------------
# TensorRT (Jetson): engines built on the device by trtexec
#
# JetPack ships TensorRT with its command-line tool trtexec (/usr/src/tensorrt/bin/trtexec, not on
# PATH); nothing is pip-installed. The runner drives trtexec for everything, never the `tensorrt`
# Python bindings: those need a CUDA memory API besides (pycuda or cuda-python, which JetPack does
# not always ship) and changed between TensorRT 8.2 (Jetson Nano, Python 3.6) and 10 (Orin), while
# trtexec's flags and reports are the same on both.
#   * build: `trtexec --onnx=M --saveEngine=E --skipInference` plus the precision flags, once per
#     (ONNX sha256, TensorRT version, flags), cached in ENGINE_CACHE_ENV / job "engine_cache" /
#     ~/.cache/edgekit/engines: a build takes minutes on a Jetson.
#   * outputs: `trtexec --loadEngine=E --loadInputs=name:file.bin --exportOutput=out.json`.
#   * timing: `trtexec --loadEngine=E --exportTimes=times.json`: trtexec times its own loop with CUDA
#     events (H2D + GPU compute + D2H per query); a process per inference would time process starts.
# NOT VERIFIED ON HARDWARE: written against NVIDIA's documented trtexec interface (samples/trtexec,
# samples/common/sampleReporting.cpp) and tested here with a stand-in trtexec only.

TRTEXEC_ENV = "EDGEKIT_TRTEXEC"
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
ENGINE_CACHE_ENV = "EDGEKIT_ENGINE_CACHE"
TRT_PRECISIONS = ("fp32", "fp16", "int8")
TRTEXEC_WARMUP_MS = 200  # trtexec's own default; its warm-up is a time, not a count of runs
TRTEXEC_BUILD_TIMEOUT_S = 3600  # an engine build on a Jetson Nano can take many minutes
TRTEXEC_RUN_TIMEOUT_S = 900

# ONNX TensorProto.DataType codes as numpy dtypes
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


class Trtexec(object):
    """What "importing" the tensorrt runtime finds: the trtexec binary and its TensorRT version."""

    def __init__(self, path, version):
        self.path = path
        self.version = version

    @property
    def major(self):
        try:
            return int(str(self.version).split(".")[0])
        except ValueError:
            return None


def trtexec_candidates():
    """Where trtexec is looked for, in order: $EDGEKIT_TRTEXEC, PATH, JetPack's place."""
    found = []
    if os.environ.get(TRTEXEC_ENV):
        found.append(os.environ[TRTEXEC_ENV])
    on_path = shutil.which("trtexec")
    if on_path:
        found.append(on_path)
    found.append(JETPACK_TRTEXEC)
    return found


def find_trtexec():
    """The first executable trtexec with its version; ImportError (the runner then falls back to
    the next runtime with a note) when there is none."""
    for path in trtexec_candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            code, text = _run_tool([path, "--help"], 120)
            return Trtexec(path, parse_trtexec_version(text))
    raise ImportError("no trtexec (looked at ${}, PATH and {}): TensorRT comes with JetPack".format(
        TRTEXEC_ENV, JETPACK_TRTEXEC))


def _run_tool(argv, timeout):
    """(exit status, stdout + stderr) of a command; (None, reason) when it cannot run or times out."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "{} timed out after {} s".format(os.path.basename(argv[0]), timeout)
    except OSError as exc:
        return None, "cannot run {}: {}".format(argv[0], exc)
    # bytes, decoded leniently: a log line in another encoding must not fail the run
    return proc.returncode, (proc.stdout or b"").decode("utf-8", "replace")


def parse_trtexec_version(text):
    """"10.6.0" from trtexec's banner "&&&& RUNNING TensorRT.trtexec [TensorRT v100600] ...".

    The number is NV_TENSORRT_VERSION: major * 1000 + minor * 100 + patch up to TensorRT 8
    (v8201 = 8.2.1), major * 10000 + minor * 100 + patch from TensorRT 10 (v100600 = 10.6.0).
    """
    match = re.search(r"\[TensorRT v(\d+)\]", text or "")
    if not match:
        return None
    number = int(match.group(1))
    if number >= 10000:
        return "{}.{}.{}".format(number // 10000, number // 100 % 100, number % 100)
    return "{}.{}.{}".format(number // 1000, number // 100 % 10, number % 100)


def precision_flags(precision, trt_major=None):
    """trtexec's build flags for an edgekit precision.

    int8 is edgekit's explicitly quantized (QDQ) ONNX: TensorRT takes the scales from the Q/DQ
    nodes, no calibrator (the implicit calibrators are deprecated since TensorRT 10.1, see
    docs.nvidia.com/deeplearning/tensorrt/api/c_api/deprecated.html). "To enable any quantization
    operations, the INT8 flag must be set in the builder config" (TensorRT 8.x developer guide,
    Explicit vs Implicit Quantization), and --fp16 lets the layers between Q/DQ pairs run in fp16
    as NVIDIA's QDQ examples do. TensorRT 11 removes the INT8/FP16 builder flags (migration guide
    "tensorrt-10x-to-11x"): a strongly typed network takes its types from the Q/DQ nodes.
    """
    if precision not in TRT_PRECISIONS:
        raise RunnerError("bad_job", "precision must be one of {}, not {!r}".format(
            ", ".join(TRT_PRECISIONS), precision))
    strongly_typed_only = trt_major is not None and trt_major >= 11
    if precision == "fp32":
        return []
    if precision == "fp16":
        if strongly_typed_only:
            raise RunnerError("model_load", "TensorRT {} has no --fp16: it needs an fp16 ONNX (strong "
                              "typing)".format(trt_major))
        return ["--fp16"]
    return ["--stronglyTyped"] if strongly_typed_only else ["--int8", "--fp16"]


def _trt_name(name):
    """A tensor name as trtexec's shape/input specs take it: quoted when it holds a colon."""
    return "'{}'".format(name) if ":" in name else name


def shape_spec(inputs):
    """"x:1x3x224x224,y:1x8" for [(name, shape)], or None when every input is static."""
    if all(None not in shape for _name, shape in inputs):
        return None
    return ",".join("{}:{}".format(_trt_name(name), "x".join(str(d if d is not None else 1) for d in shape))
                    for name, shape in inputs)


def shape_flags(inputs):
    """Dynamic dims are built as 1 (one optimization profile, min = opt = max): the engine runs
    the shapes the runner feeds it, one sample at a time when the batch is dynamic."""
    spec = shape_spec(inputs)
    if spec is None:
        return []
    return ["--minShapes=" + spec, "--optShapes=" + spec, "--maxShapes=" + spec]


def trtexec_build_command(trtexec, onnx, engine, precision, trt_major=None, inputs=()):
    """The argv that builds `engine` from `onnx` (and runs no inference)."""
    return ([trtexec, "--onnx=" + onnx, "--saveEngine=" + engine, "--skipInference"]
            + precision_flags(precision, trt_major) + shape_flags(inputs))


def engine_cache_key(onnx_sha256, trt_version, flags):
    """The name of a cached engine: anything that changes the built engine changes it."""
    blob = json.dumps({"onnx_sha256": onnx_sha256, "tensorrt": trt_version or "unknown",
                       "flags": list(flags)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def engine_cache_dir(job_value=None):
    """The job's "engine_cache", else $EDGEKIT_ENGINE_CACHE, else ~/.cache/edgekit/engines."""
    chosen = job_value or os.environ.get(ENGINE_CACHE_ENV) or os.path.join("~", ".cache", "edgekit", "engines")
    return os.path.abspath(os.path.expanduser(chosen))


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tail(text, lines=15):
    return "\n".join((text or "").strip().splitlines()[-lines:])


def cached_engine(tool, onnx, precision, inputs, cache_dir):
    """(engine path, what happened) for `onnx`: the cached engine, else one trtexec builds now.

    The engine is written under a temporary name and renamed when trtexec succeeded, so an
    interrupted build never leaves a broken engine behind to be "reused".
    """
    flags = precision_flags(precision, tool.major) + shape_flags(inputs)
    onnx_sha256 = _sha256_file(onnx)
    key = engine_cache_key(onnx_sha256, tool.version, flags)
    engine = os.path.join(cache_dir, key + ".engine")
    info = {"key": key, "path": engine, "cache_hit": True, "build_seconds": None, "flags": flags,
            "onnx_sha256": onnx_sha256}
    if os.path.isfile(engine) and os.path.getsize(engine) > 0:
        return engine, info
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as exc:
        raise RunnerError("model_load", "cannot create the engine cache {}: {}".format(cache_dir, exc))
    partial = "{}.tmp-{}".format(engine, os.getpid())
    command = trtexec_build_command(tool.path, onnx, partial, precision, tool.major, inputs)
    start = time.perf_counter()
    code, text = _run_tool(command, TRTEXEC_BUILD_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if code != 0 or not os.path.isfile(partial):
        _remove(partial)
        kind = "out_of_memory" if _looks_like_oom(RuntimeError(text)) else "model_load"
        raise RunnerError(kind, "trtexec could not build a {} engine from {} (exit {}):\n{}".format(
            precision, onnx, code, _tail(text)))
    os.replace(partial, engine)
    info.update(cache_hit=False, build_seconds=seconds)
    sidecar = dict(info, tensorrt=tool.version, command=command, built_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        write_json_atomic(os.path.join(cache_dir, key + ".json"), sidecar)
    except Exception:
        pass  # the sidecar only explains the engine to a human
    return engine, info


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _varint(buf, i):
    result = 0
    shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _protobuf_fields(buf):
    """(field number, value) of one protobuf message: ints for varints, memoryviews otherwise."""
    i = 0
    end = len(buf)
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported protobuf wire type {}".format(wire))
        yield key >> 3, value


def _onnx_value_info(buf):
    """(name, shape with None for dynamic dims, numpy dtype name) of an ONNX ValueInfoProto."""
    name, elem_type, shape = "", 0, []
    for field, value in _protobuf_fields(buf):
        if field == 1:
            name = bytes(value).decode("utf-8")
        elif field == 2:  # TypeProto
            for tfield, tensor in _protobuf_fields(value):
                if tfield != 1:  # tensor_type (sequences, maps: not for TensorRT)
                    continue
                for sfield, svalue in _protobuf_fields(tensor):
                    if sfield == 1:
                        elem_type = svalue
                    elif sfield == 2:  # TensorShapeProto: dims
                        for _dfield, dim in _protobuf_fields(svalue):
                            size = None
                            for kind, dvalue in _protobuf_fields(dim):
                                if kind == 1 and dvalue < (1 << 63):
                                    size = int(dvalue)
                            shape.append(size)
    return name, shape, _ONNX_DTYPES.get(elem_type)


def onnx_io(path):
    """{"inputs", "outputs": [(name, shape, dtype)], "metadata": {key: value}} of an ONNX file, read
    with a few lines of protobuf decoding: trtexec needs the inputs' names and shapes, and neither
    onnx nor onnxruntime has to be on a Jetson for it."""
    with open(path, "rb") as handle:
        data = memoryview(handle.read())
    inputs, outputs, initializers, metadata = [], [], set(), {}
    for field, value in _protobuf_fields(data):
        if field == 14:  # ModelProto.metadata_props
            entry = dict((k, bytes(v).decode("utf-8")) for k, v in _protobuf_fields(value) if k in (1, 2))
            metadata[entry.get(1, "")] = entry.get(2, "")
        elif field == 7:  # ModelProto.graph
            for gfield, gvalue in _protobuf_fields(value):
                if gfield == 5:  # initializer: old exporters list weights among the inputs too
                    for tfield, tvalue in _protobuf_fields(gvalue):
                        if tfield == 8:
                            initializers.add(bytes(tvalue).decode("utf-8"))
                elif gfield == 11:
                    inputs.append(_onnx_value_info(gvalue))
                elif gfield == 12:
                    outputs.append(_onnx_value_info(gvalue))
    inputs = [i for i in inputs if i[0] not in initializers]
    return {"inputs": inputs, "outputs": outputs, "metadata": metadata}


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
_PERF_LINE = re.compile(r"(Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency)"
                        r": min = (" + _NUMBER + r") ms, max = (" + _NUMBER + r") ms, mean = (" + _NUMBER
                        + r") ms, median = (" + _NUMBER + r") ms(.*)$")
_PERF_KEYS = {"Latency": "latency", "End-to-End Host Latency": "end_to_end", "Enqueue Time": "enqueue",
              "H2D Latency": "h2d", "GPU Compute Time": "gpu_compute", "D2H Latency": "d2h"}


def parse_trtexec_timing(text):
    """trtexec's "=== Performance summary ===" as numbers (ms, qps, s); {} when there is none.

    Lines as samples/common/sampleReporting.cpp prints them (each behind a "[date] [I] " prefix):
    "Throughput: 123.4 qps", "Latency: min = a ms, max = b ms, mean = c ms, median = d ms,
    percentile(90%) = e ms[, percentile(95%) = ...]" likewise for End-to-End Host Latency, Enqueue
    Time, H2D Latency, GPU Compute Time and D2H Latency, "Total Host Walltime: 3.0 s" and
    "Total GPU Compute Time: 2.9 s".
    """
    summary = {}
    for line in (text or "").splitlines():
        match = _PERF_LINE.search(line)
        if match:  # the leftmost match: "End-to-End Host Latency" wins over its "Latency"
            stats = {"min": float(match.group(2)), "max": float(match.group(3)),
                     "mean": float(match.group(4)), "median": float(match.group(5))}
            percentiles = re.findall(r"percentile\(([\d.]+)%\) = (" + _NUMBER + r") ms", match.group(6))
            stats["percentiles"] = dict((p, float(v)) for p, v in percentiles)
            summary[_PERF_KEYS[match.group(1)]] = stats
            continue
        match = re.search(r"Throughput: (" + _NUMBER + r") qps", line)
        if match:
            summary["throughput_qps"] = float(match.group(1))
            continue
        match = re.search(r"Total (Host Walltime|GPU Compute Time): (" + _NUMBER + r") s", line)
        if match:
            key = "total_host_walltime_s" if match.group(1) == "Host Walltime" else "total_gpu_compute_s"
            summary[key] = float(match.group(2))
    return summary


def parse_trtexec_times(text, warmup_ms=0.0):
    """(warm-up latencies, timed latencies) in ms from an --exportTimes trace.

    The trace is a JSON list with one object per query ("startComputeMs", "latencyMs" = H2D +
    GPU compute + D2H, "computeMs", ...), warm-up included; trtexec counts a query as warm-up
    when its compute started before --warmUp ms, and so does this.
    """
    try:
        trace = json.loads(text)
    except ValueError as exc:
        raise RunnerError("inference", "trtexec's --exportTimes file is not JSON: {}".format(exc))
    warm, timed = [], []
    for query in trace:
        if not isinstance(query, dict) or "latencyMs" not in query:
            continue
        (timed if float(query.get("startComputeMs", 0.0)) >= warmup_ms else warm).append(float(query["latencyMs"]))
    return warm, timed


def parse_trtexec_outputs(text):
    """{name: (dims, values)} from an --exportOutput file:
    [{"name": "out", "dimensions": "1x10", "values": [0.1, ...]}, ...]. trtexec prints non-finite
    values as C++ streams do (nan, inf), which JSON spells NaN and Infinity."""
    text = re.sub(r"(?<![\w\"])-?nan(?![\w\"])", "NaN", text or "", flags=re.I)
    text = re.sub(r"(?<![\w\"])(-?)inf(?![\w\"])", r"\1Infinity", text, flags=re.I)
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise RunnerError("inference", "trtexec's --exportOutput file is not JSON: {}".format(exc))
    found = {}
    for entry in entries:
        dims = [int(d) for d in re.findall(r"\d+", str(entry.get("dimensions", "")))]
        found[entry["name"]] = (dims, entry.get("values") or [])
    return found


class TrtexecSession(Session):
    """An ONNX model as a TensorRT engine that trtexec built on this device (see the section's top).

    `precision` (fp32, fp16, int8): the job's, else the model's "edgekit.precision" metadata, else
    fp32. Every inference is a trtexec process (the engine deserialized each time): fine for
    outputs and evaluation, useless for timing, which time_runs() leaves to trtexec's own loop.
    """

    def __init__(self, tool, path, precision=None, cache_dir=None, io_quantization=None):
        Session.__init__(self)
        self._tool = tool
        try:
            io = onnx_io(path)
        except Exception as exc:
            raise _wrap("model_load", "cannot read the inputs and outputs of {}".format(path), exc)
        precision = precision or io["metadata"].get("edgekit.precision") or "fp32"
        io_quantization = io_quantization or {}
        self._in = [self._spec(entry, io_quantization.get("inputs") or {}) for entry in io["inputs"]]
        self._out = [self._spec(entry, io_quantization.get("outputs") or {}) for entry in io["outputs"]]
        dynamic = [(name, shape) for name, shape, _dtype in io["inputs"] if None in shape]
        self._shapes = shape_spec([(name, shape) for name, shape, _dtype in io["inputs"]])
        if dynamic:
            self.notes.append("TensorRT engine built for dynamic dims = 1 ({}): one sample per "
                              "inference".format(self._shapes))
        self._engine, engine = cached_engine(tool, str(path), precision, [(n, s) for n, s, _d in io["inputs"]],
                                             engine_cache_dir(cache_dir))
        self.notes.append("TensorRT engine {} ({}): {}".format(
            engine["key"], precision, "reused from the cache" if engine["cache_hit"]
            else "built in {:.1f} s".format(engine["build_seconds"])))
        self._last = None
        self.runtime = {"name": "tensorrt", "version": tool.version, "providers": None, "threads": None,
                        "trtexec": tool.path, "precision": precision, "engine": engine, "summary": None}

    @staticmethod
    def _spec(entry, job_quant):
        name, shape, dtype = entry
        if dtype is None:
            raise RunnerError("model_load", "{!r} has a type TensorRT's I/O does not take".format(name))
        fixed = [d if d is not None else 1 for d in shape]  # as the engine was built
        return _Tensor(name, fixed, dtype, _quant_from_job(job_quant.get(name), np.dtype(dtype)))

    def _base_command(self):
        command = [self._tool.path, "--loadEngine=" + self._engine]
        if self._shapes:
            command.append("--shapes=" + self._shapes)
        return command

    def _input_files(self, native, folder):
        """--loadInputs for `native`: raw little-endian arrays as numpy's tofile writes them (as
        samples/trtexec/README.md shows). TensorRT before 10 has no int64 I/O: int32 then."""
        specs = []
        for spec in self._in:
            arr = np.ascontiguousarray(native[spec.name])
            if arr.dtype == np.int64 and (self._tool.major or 0) < 10:
                arr = arr.astype(np.int32)
            target = os.path.join(folder, "input{}.bin".format(len(specs)))
            arr.tofile(target)
            specs.append("{}:{}".format(_trt_name(spec.name), target))
        return "--loadInputs=" + ",".join(specs)

    def _run(self, extra, folder, what):
        code, text = _run_tool(self._base_command() + extra, TRTEXEC_RUN_TIMEOUT_S)
        if code != 0:
            kind = "out_of_memory" if _looks_like_oom(RuntimeError(text)) else "inference"
            raise RunnerError(kind, "trtexec failed {} (exit {}):\n{}".format(what, code, _tail(text)))
        return text

    def run_native(self, native):
        folder = tempfile.mkdtemp(prefix="edgekit-trt-")
        try:
            out_file = os.path.join(folder, "outputs.json")
            self._run([self._input_files(native, folder), "--exportOutput=" + out_file,
                       "--iterations=1", "--warmUp=0", "--duration=0", "--avgRuns=1"], folder,
                      "running the engine")
            with open(out_file) as handle:
                found = parse_trtexec_outputs(handle.read())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        outputs = []
        for spec in self._out:
            if spec.name not in found:
                raise RunnerError("inference", "trtexec wrote no output {!r} (it wrote {})".format(
                    spec.name, sorted(found)))
            dims, values = found[spec.name]
            outputs.append(np.asarray(values, dtype=np.float64).astype(spec.dtype).reshape(dims))
        return outputs

    def bind(self, native, outputs_like=None):
        def invoke():
            self._last = self.run_native(native)
        return invoke

    def bound_outputs(self):
        return list(self._last or [])

    def time_runs(self, native, warmup, runs, min_seconds=0.0, max_runs=DEFAULT_MAX_RUNS):
        """(warm-up ms, timed ms) from trtexec's own loop: at least `runs` queries and `min_seconds`.

        trtexec warms up for a time (TRTEXEC_WARMUP_MS), not `warmup` runs; each sample is its
        "latencyMs" (H2D + GPU compute + D2H, timed with CUDA events), not time.perf_counter.
        """
        folder = tempfile.mkdtemp(prefix="edgekit-trt-")
        try:
            times = os.path.join(folder, "times.json")
            text = self._run([self._input_files(native, folder), "--exportTimes=" + times,
                              "--iterations={}".format(max(1, runs)),
                              "--duration={}".format(int(math.ceil(min_seconds or 0))),
                              "--warmUp={}".format(TRTEXEC_WARMUP_MS), "--avgRuns=1"], folder,
                             "timing the engine")
            with open(times) as handle:
                warm, timed = parse_trtexec_times(handle.read(), TRTEXEC_WARMUP_MS)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.runtime["summary"] = parse_trtexec_timing(text) or None
        self.notes.append("timed by trtexec: {} ms warm-up (not {} runs), samples are its per-query "
                          "latency (H2D + GPU compute + D2H)".format(TRTEXEC_WARMUP_MS, warmup))
        return warm, timed[:max(runs, max_runs)]


def _trtexec_session(rt, path, providers, threads, io_quantization, engine_options=None):
    engine_options = engine_options or {}
    return TrtexecSession(rt.module, path, engine_options.get("precision"), engine_options.get("engine_cache"),
                          io_quantization)


def _ort_session(rt, path, providers, threads, io_quantization):
    return OrtSession(rt.module, rt.version, path, providers, threads, io_quantization)


def _tflite_session(rt, path, providers, threads, io_quantization):
    return TfliteSession(rt.module, rt.name, rt.version, path, threads, io_quantization)


def _executorch_session(rt, path, providers, threads, io_quantization):
    return ExecutorchSession(rt.module, rt.version, path, threads, io_quantization)


# runtime name -> how it opens a model: (imported runtime, path, providers, threads, io quantization)
SESSIONS = {
    "onnxruntime": _ort_session,
    "ai_edge_litert": _tflite_session,
    "tflite_runtime": _tflite_session,
    "tensorflow": _tflite_session,
    "executorch": _executorch_session,
    "tensorrt": _trtexec_session,
}


def _open_with(rt, path, fmt, providers=None, threads=None, io_quantization=None, engine_options=None):
    path = str(path)
    if not os.path.isfile(path):
        raise RunnerError("model_load", "model file not found: {}".format(path))
    if rt.name == "tensorrt":  # the engine it builds depends on the job's precision and cache
        session = _trtexec_session(rt, path, providers, threads, io_quantization, engine_options)
    else:
        session = SESSIONS[rt.name](rt, path, providers, threads, io_quantization)
    session.notes = list(rt.notes) + session.notes
    return session


def open_model(path, fmt, runtimes=None, providers=None, threads=None, io_quantization=None,
               engine_options=None):
    """Load `path` (a format of FORMAT_RUNTIMES) with the first usable runtime; see Session.
    engine_options: {"precision", "engine_cache"} for the tensorrt runtime (job.json's keys)."""
    _need_numpy()
    rt = import_runtime(fmt, runtimes)
    return _open_with(rt, path, fmt, providers, threads, io_quantization, engine_options)


def random_feeds(session, seed=0, ranges=None):
    """Inputs from the model's input spec (dynamic dims -> 1), reproducible. `ranges` maps an
    input name to [low, high] (both included for integers): token ids need their vocabulary."""
    rng = np.random.RandomState(seed)
    ranges = ranges or {}
    feeds = {}
    for spec in session._in:
        shape = [d if d is not None else 1 for d in spec.shape]
        bounds = ranges.get(spec.name)
        if spec.quant is not None or spec.dtype.kind == "f":
            if bounds:
                feeds[spec.name] = rng.uniform(bounds[0], bounds[1], size=shape).astype(np.float32)
            else:
                feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
        elif spec.dtype.kind == "b":
            feeds[spec.name] = rng.rand(*shape) > 0.5
        else:
            low, high = (int(bounds[0]), int(bounds[1])) if bounds else (0, 9)
            feeds[spec.name] = rng.randint(low, high + 1, size=shape).astype(spec.dtype)
    return feeds


def load_npz(path, what):
    """{name: ndarray} from an .npz, never unpickling."""
    if not os.path.isfile(path):
        raise RunnerError("bad_input", "{} not found: {}".format(what, path))
    try:
        with np.load(path, allow_pickle=False) as data:
            return dict((name, data[name]) for name in data.files)
    except Exception as exc:
        raise _wrap("bad_input", "cannot read {} {} (object arrays are refused)".format(
            what, path), exc)


# ---------------------------------------------------------------------------------------------
# The job


def _need_numpy():
    if np is None:
        raise RunnerError("runtime_missing", "numpy is not installed for {}".format(
            sys.executable))


def _resolve(run_dir, name):
    return name if os.path.isabs(name) else os.path.join(run_dir, name)


def _int(job, key, default, minimum=0):
    value = job.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < minimum:
        raise RunnerError("bad_job", "{} must be an integer >= {} (got {!r})".format(
            key, minimum, value))
    return int(value)


def read_job(run_dir):
    path = os.path.join(run_dir, "job.json")
    try:
        with open(path) as handle:
            job = json.load(handle)
    except (IOError, OSError) as exc:
        raise RunnerError("bad_job", "cannot read {}: {}".format(path, exc))
    except ValueError as exc:
        raise RunnerError("bad_job", "job.json is not valid JSON: {}".format(exc))
    if not isinstance(job, dict):
        raise RunnerError("bad_job", "job.json must hold an object")
    if job.get("schema_version") != SCHEMA_VERSION:
        raise RunnerError("bad_job", "job.json has schema_version {!r}; this runner reads {}"
                          .format(job.get("schema_version"), SCHEMA_VERSION))
    if job.get("mode", "benchmark") not in MODES:
        raise RunnerError("bad_job", "mode must be benchmark, outputs or evaluate, not {!r}".format(
            job.get("mode")))
    if job.get("format") not in FORMAT_RUNTIMES:
        raise RunnerError("bad_job", "format must be one of {}, not {!r}".format(
            ", ".join(sorted(FORMAT_RUNTIMES)), job.get("format")))
    if not isinstance(job.get("model"), str) or not job.get("model"):
        raise RunnerError("bad_job", "model must be a file name")
    for key in ("precision", "engine_cache"):
        if job.get(key) is not None and not isinstance(job.get(key), str):
            raise RunnerError("bad_job", "{} must be a string or null".format(key))
    for key in ("runtimes", "providers"):
        value = job.get(key)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(v, str) for v in value)):
            raise RunnerError("bad_job", "{} must be a list of names".format(key))
    if job.get("threads") is not None:
        _int(job, "threads", None, 1)
    min_seconds = job.get("min_seconds", 0) or 0
    if isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float)) \
            or min_seconds < 0:
        raise RunnerError("bad_job", "min_seconds must be a number >= 0")
    if job.get("mode") == "evaluate" and not isinstance(job.get("eval"), dict):
        raise RunnerError("bad_job", "mode evaluate needs an eval object")
    return job


def time_loop(invoke, runs, min_seconds=0.0, max_runs=DEFAULT_MAX_RUNS):
    """Raw latencies (ms) of at least `runs` calls, going on until `min_seconds` have passed."""
    perf = time.perf_counter
    samples = []
    append = samples.append
    max_runs = max(runs, max_runs)
    start = perf()
    chunk = runs
    while True:
        for _ in range(chunk):
            t0 = perf()
            invoke()
            append(perf() - t0)
        done = len(samples)
        elapsed = perf() - start
        if elapsed >= min_seconds or done >= max_runs:
            break
        if done == 0:
            chunk = 1
        else:
            per = elapsed / done
            chunk = int(min(max_runs - done, (min_seconds - elapsed) / per + 1))
            chunk = max(chunk, 1)
    return [s * 1000.0 for s in samples]


def _benchmark(job, run_dir, session, result):
    warmup = _int(job, "warmup", 10)
    runs = _int(job, "runs", 100)
    max_runs = _int(job, "max_runs", DEFAULT_MAX_RUNS)
    min_seconds = float(job.get("min_seconds", 0) or 0)
    if job.get("inputs"):
        feeds = load_npz(_resolve(run_dir, job["inputs"]), "inputs file")
    else:
        feeds = random_feeds(session, 0, job.get("input_ranges"))
    native = session.prepare(feeds)
    t0 = time.perf_counter()
    try:
        raw = session.run_native(native)
    except RunnerError:
        raise
    except Exception as exc:
        raise _wrap("inference", "the first inference failed", exc)
    result["timings_ms"]["first"] = (time.perf_counter() - t0) * 1000.0
    if job.get("save_outputs"):
        outputs = session.dequantize_outputs(raw)
        target = _resolve(run_dir, job["save_outputs"])
        with open(target, "wb") as handle:
            np.savez(handle, **dict((spec.name, out) for spec, out in zip(session._out, outputs)))
    own_timing = getattr(session, "time_runs", None)  # TensorRT: trtexec times its own loop
    try:
        if own_timing is not None:
            known = len(session.notes)
            result["warmup_ms"], result["samples_ms"] = own_timing(native, warmup, runs, min_seconds, max_runs)
            result["notes"].extend(session.notes[known:])
            return
        invoke = session.bind(native, raw)
        result["warmup_ms"] = time_loop(invoke, warmup, 0.0, warmup)
        result["samples_ms"] = time_loop(invoke, runs, min_seconds, max_runs)
    except Exception as exc:
        raise _wrap("inference", "inference failed while timing", exc)


def profile_ops(session, native, run_dir, runs, top=15):
    """Per-operator time over `runs` inferences in a second, profiling session (ONNX Runtime).

    Profiling slows every op, so it runs after the timed loop and the memory reading, never
    inside them. Returns (rows, note): rows largest first, each {op, name, total_ms, count,
    percent}; None and a note when the runtime has no profiler.
    """
    if not isinstance(session, OrtSession):
        return None, "per-operator profile: not available for {} (no profiler in its Python API)".format(
            session.runtime.get("name"))
    ort = session._ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = session._threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(run_dir, "ort_profile")
    sess = ort.InferenceSession(session._source, sess_options=options, providers=session._providers)
    for _ in range(max(1, runs)):
        sess.run(None, native)
    profile_path = sess.end_profiling()
    try:
        with open(profile_path) as handle:
            events = json.load(handle)
    finally:
        try:
            os.remove(profile_path)
        except OSError:
            pass
    totals = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        op = (event.get("args") or {}).get("op_name", "?")
        entry = totals.setdefault(name, {"op": op, "name": name, "us": 0.0, "count": 0})
        entry["us"] += float(event.get("dur", 0))
        entry["count"] += 1
    whole = sum(e["us"] for e in totals.values()) or 1.0
    rows = sorted(totals.values(), key=lambda e: -e["us"])[:top]
    return [{"op": e["op"], "name": e["name"], "total_ms": e["us"] / 1000.0, "count": e["count"],
             "percent": 100.0 * e["us"] / whole} for e in rows], None


def _chunk_size(session, batch):
    """Samples per inference: the fixed batch dim of the inputs, or `batch` when dynamic."""
    fixed = set(spec.shape[0] if spec.shape else None for spec in session._in)
    if len(fixed) != 1:
        raise RunnerError("bad_job", "the model's inputs disagree on the batch dimension: {}"
                          .format([spec.shape for spec in session._in]))
    fixed = fixed.pop()
    return (batch, False) if fixed is None else (fixed, True)


def _run_chunks(session, arrays, batch, what):
    """Run the model over arrays with a leading sample dim N; outputs stacked back to N."""
    n = None
    for name, arr in arrays.items():
        if arr.ndim == 0 or (n is not None and arr.shape[0] != n):
            raise RunnerError("bad_input", "{}: every array needs the same leading (sample) "
                              "dimension; {!r} has shape {}".format(what, name, list(arr.shape)))
        n = arr.shape[0]
    if not n:
        raise RunnerError("bad_input", "{}: no samples".format(what))
    chunk, pad = _chunk_size(session, batch)
    for spec in session._in:
        arr = arrays.get(spec.name)
        if arr is not None and not _shapes_compatible(spec.shape[1:], arr.shape[1:]):
            raise RunnerError("bad_input", "{}: samples of {!r} have shape {} but the model takes "
                              "{}".format(what, spec.name, list(arr.shape[1:]), spec.shape[1:]))
    pieces = []
    for lo in range(0, n, chunk):
        feeds = {}
        m = 0
        for name, arr in arrays.items():
            part = arr[lo:lo + chunk]
            m = part.shape[0]
            if pad and m < chunk:
                filler = np.zeros((chunk - m,) + part.shape[1:], dtype=part.dtype)
                part = np.concatenate([part, filler])
            feeds[name] = part
        try:
            outs = session.run(feeds)
        except RunnerError:
            raise
        except Exception as exc:
            raise _wrap("inference", "inference failed on samples {}..{}".format(lo, lo + m - 1),
                        exc)
        pieces.append([np.asarray(o)[:m] for o in outs])
    outputs = [np.concatenate([p[i] for p in pieces]) for i in range(len(session._out))]
    return n, chunk, outputs


def _outputs(job, run_dir, session, result):
    """Mode outputs: the (dequantized) outputs for every sample of `inputs`, saved as .npz."""
    if not job.get("inputs") or not job.get("save_outputs"):
        raise RunnerError("bad_job", "mode outputs needs inputs and save_outputs")
    feeds = load_npz(_resolve(run_dir, job["inputs"]), "inputs file")
    names = [spec.name for spec in session._in]
    if sorted(feeds) != sorted(names):
        raise RunnerError("bad_input", "inputs do not match the model: the file has {}, the "
                          "model takes {}".format(sorted(feeds), names))
    start = time.perf_counter()
    n, chunk, outputs = _run_chunks(session, feeds, _int(job, "batch", 64, 1), "inputs")
    seconds = time.perf_counter() - start
    target = _resolve(run_dir, job["save_outputs"])
    with open(target, "wb") as handle:
        np.savez(handle, **dict((spec.name, out) for spec, out in zip(session._out, outputs)))
    result["outputs"] = {"n": n, "batch": chunk, "seconds": seconds,
                         "file": job["save_outputs"], "names": [s.name for s in session._out]}


def _evaluate(job, run_dir, session, result):
    spec_eval = job["eval"]
    if len(session._in) != 1:
        raise RunnerError("bad_job", "evaluate needs a model with one input (this one has {})"
                          .format(len(session._in)))
    data_name = spec_eval.get("data")
    if not isinstance(data_name, str):
        raise RunnerError("bad_job", "eval.data must be an .npz file name")
    data = load_npz(_resolve(run_dir, data_name), "eval data")
    x_name = spec_eval.get("x", "x")
    y_name = spec_eval.get("y", "y")
    for key in (x_name, y_name):
        if key not in data:
            raise RunnerError("bad_input", "eval data has no array {!r} (it has {})".format(
                key, sorted(data)))
    x = data[x_name]
    y = data[y_name]
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    n = int(x.shape[0]) if x.ndim else 0
    if n == 0 or y.shape[0] != n:
        raise RunnerError("bad_input", "eval data: {} samples in {!r} but {} labels in {!r}"
                          .format(n, x_name, y.shape[0], y_name))
    batch = _int(spec_eval, "batch", 64, 1)
    start = time.perf_counter()
    n, chunk, outputs = _run_chunks(session, {session._in[0].name: x}, batch, "eval data")
    seconds = time.perf_counter() - start
    preds = outputs[0].reshape(n, -1).argmax(axis=1).astype(np.int64)
    correct = int((preds == y.astype(np.int64)).sum())
    result["eval"] = {"n": n, "correct": correct, "accuracy": correct / float(n),
                      "batch": chunk, "seconds": seconds}
    name = spec_eval.get("predictions")
    if name:
        if not isinstance(name, str):
            raise RunnerError("bad_job", "eval.predictions must be a file name")
        with open(_resolve(run_dir, name), "wb") as handle:
            np.save(handle, preds, allow_pickle=False)
        result["eval"]["predictions"] = name


def new_result(mode=None):
    return {
        "schema_version": SCHEMA_VERSION,
        "runner_version": RUNNER_VERSION,
        "ok": False,
        "error": None,
        "mode": mode,
        "runtime": None,
        "notes": [],
        "model": None,
        "timings_ms": {"import": None, "init": None, "first": None},
        "warmup_ms": [],
        "samples_ms": [],
        "memory": {"baseline_rss_kib": None, "peak_rss_kib": None},
        "device": None,
        "state_before": None,
        "state_after": None,
        "eval": None,
        "outputs": None,
    }


def run_job(run_dir, result):
    """Fill `result` from RUN_DIR/job.json; raises RunnerError (the result keeps what it has)."""
    result["state_before"] = device_state()
    result["device"] = device_facts()
    _need_numpy()
    job = read_job(run_dir)
    mode = job.get("mode", "benchmark")
    result["mode"] = mode
    fmt = job["format"]
    rt = import_runtime(fmt, job.get("runtimes"))
    result["timings_ms"]["import"] = rt.seconds * 1000.0
    result["memory"]["baseline_rss_kib"] = rss_high_water_kib()
    result["notes"].extend(rt.notes)
    if rt.was_loaded:
        warm = "{} was already imported in this process: the import time is not a cold " \
               "import".format(rt.name)
        result["notes"].append(warm)
    model_path = _resolve(run_dir, job["model"])
    t0 = time.perf_counter()
    session = _open_with(rt, model_path, fmt, job.get("providers"), job.get("threads"),
                         job.get("io_quantization"),
                         {"precision": job.get("precision"), "engine_cache": job.get("engine_cache")})
    result["timings_ms"]["init"] = (time.perf_counter() - t0) * 1000.0
    result["notes"] = list(session.notes) + (result["notes"][-1:] if rt.was_loaded else [])
    result["runtime"] = session.runtime
    result["model"] = {"inputs": session.inputs, "outputs": session.outputs,
                       "size_bytes": os.path.getsize(model_path)}
    if mode == "benchmark":
        _benchmark(job, run_dir, session, result)
    elif mode == "outputs":
        _outputs(job, run_dir, session, result)
    else:
        _evaluate(job, run_dir, session, result)
    result["memory"]["peak_rss_kib"] = rss_high_water_kib()
    result["state_after"] = device_state()
    if mode == "benchmark" and job.get("profile_ops"):
        native = session.prepare(load_npz(_resolve(run_dir, job["inputs"]), "inputs file")
                                 if job.get("inputs") else random_feeds(session, 0, job.get("input_ranges")))
        try:
            rows, note = profile_ops(session, native, run_dir, _int(job, "profile_runs", 50, 1))
        except Exception as exc:
            rows, note = None, "per-operator profile failed: {}".format(exc)
        result["op_profile"] = rows
        if note:
            result["notes"].append(note)


def probe(result):
    result["mode"] = "probe"
    result["device"] = device_facts()
    result["state_before"] = device_state()
    found = {}
    for name in KNOWN_RUNTIMES:
        entry = {"available": False, "version": None, "error": None}
        try:
            module, version = _import_one(name)
            entry["available"] = True
            entry["version"] = version
            if name == "onnxruntime":
                entry["providers"] = list(module.get_available_providers())
        except Exception as exc:
            entry["error"] = "{}: {}".format(type(exc).__name__, str(exc).strip()[:300])
        found[name] = entry
    result["runtimes"] = found
    result["memory"]["peak_rss_kib"] = rss_high_water_kib()


USAGE = "usage: edgekit_runner.py [--probe] RUN_DIR"


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    probe_mode = "--probe" in args
    args = [a for a in args if a != "--probe"]
    if len(args) != 1 or args[0].startswith("-") or not os.path.isdir(args[0]):
        sys.stderr.write(USAGE + "\n")
        if len(args) == 1 and not args[0].startswith("-"):
            sys.stderr.write("not a directory: {}\n".format(args[0]))
        return 2
    run_dir = args[0]
    result = new_result()
    try:
        if probe_mode:
            probe(result)
        else:
            run_job(run_dir, result)
        result["ok"] = True
    except RunnerError as exc:
        result["error"] = exc.to_json()
    except MemoryError as exc:
        result["error"] = RunnerError("out_of_memory", "MemoryError: {}".format(exc),
                                      traceback.format_exc()).to_json()
    except KeyboardInterrupt:
        result["error"] = {"kind": "internal", "message": "interrupted"}
        write_json_atomic(os.path.join(run_dir, "result.json"), result)
        raise
    except Exception as exc:
        kind = "out_of_memory" if _looks_like_oom(exc) else "internal"
        result["error"] = RunnerError(kind, "{}: {}".format(type(exc).__name__, exc),
                                      traceback.format_exc()).to_json()
    if result["memory"]["peak_rss_kib"] is None:
        result["memory"]["peak_rss_kib"] = rss_high_water_kib()
    path = os.path.join(run_dir, "result.json")
    try:
        write_json_atomic(path, result)
    except Exception as exc:  # a value json cannot write: still leave a result behind
        fallback = new_result(result.get("mode"))
        fallback["error"] = {"kind": "internal", "message": "cannot write result.json: {}: {}"
                             .format(type(exc).__name__, exc)}
        result = fallback
        write_json_atomic(path, result)
    if result["error"]:
        sys.stderr.write("edgekit runner: {} error: {}\n".format(
            result["error"]["kind"], result["error"]["message"]))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
