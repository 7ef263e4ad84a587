"""The kind of host a benchmark ran on, stamped into every JSON row so that figures from
different machines are never mixed silently (int8 speed and even int8 numerics depend on it:
docs/export.md, "int8 on x86")."""

from __future__ import annotations

import os
import platform
from typing import Any

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")


def host_kind() -> dict[str, Any]:
    """CPU model, the ISA flags that change int8 kernels, cores usable, and whether this ONNX
    Runtime's u8×s8 kernels saturate here (measured by the runner's probe)."""
    model, flags = _cpuinfo()
    kind: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    kind["label"] = f"{model or kind['machine']} ({', '.join(kind['flags']) or 'no SIMD flags read'}; {kind['cores']} cores)"
    try:
        import onnxruntime

        from edgekit.resources import runner_module

        kind["ort_int8_saturates"] = bool(runner_module().int8_kernels_saturate(onnxruntime))
    except ImportError:
        kind["ort_int8_saturates"] = None
    return kind


def stamp(result: dict[str, Any], *row_lists: str) -> dict[str, Any]:
    """Add ``host_kind`` to ``result`` and to every row of the named lists (default: "rows")."""
    kind = host_kind()
    result["host_kind"] = kind
    for key in row_lists or ("rows",):
        for row in result.get(key) or []:
            if isinstance(row, dict):
                row["host_kind"] = kind["label"]
    return result


def _cpuinfo() -> tuple[str | None, set[str]]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or None, set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware", "CPU part") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags
