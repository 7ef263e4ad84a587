"""ExecuTorch (``.pte``) export through XNNPACK; needs ``pip install 'edgekit[executorch]'``.

ExecuTorch is PyTorch Mobile's successor: a program of the exported graph, with the parts the
XNNPACK delegate takes (convolutions, linears, pooling, most element-wise ops) compiled for it
and the rest on ExecuTorch's portable kernels.

Precisions
  fp32  ``torch.export`` → ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` → program.
  int8  ``int8_mode="static"`` (default): PT2E with ExecuTorch's ``XNNPACKQuantizer`` (int8
        per-channel symmetric weights, int8 per-tensor activations from calibration data;
        weights GPTQ-rounded by the api first) → ``convert_pt2e`` → lowered the same way; the
        program's inputs and outputs stay float (the quantize/dequantize are inside).
        ``int8_mode="dynamic"``: int8 weights of the linear layers, activations quantized at run
        time by XNNPACK, no calibration; convolutions stay float.

The program carries a constant method ``edgekit_metadata`` returning a JSON string: edgekit's
metadata (precision, source hash, version) and the input/output names, which a ``.pte`` does not
otherwise have; the device runner reads the names from it.

Options: int8_mode ("static" | "dynamic"), per_channel (True), weight_rounding ("gptq" |
"nearest", static int8: see edgekit.export.rounding). Shapes are static (the example inputs'):
``dynamic_batch`` is refused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConverterError, ExportError, MissingDependencyError, UsageError
from edgekit.export import calibration as cal
from edgekit.export import pt2e
from edgekit.export.base import (CONV_MODULE_TYPES, Artifact, BaseFormat, DeviceRuntime, TensorSpec, Written,
                                 options_with_defaults)
from edgekit.export.converter import exception_text, quiet, unsupported_op

EXTRA = "executorch"
METADATA_METHOD = "edgekit_metadata"  # the runner's EXECUTORCH_METADATA_METHOD
_OPTIONS = {
    "int8_mode": "static",
    "per_channel": True,
    "weight_rounding": "gptq",  # static int8: "gptq" or "nearest" (edgekit.export.rounding, applied by the api)
    "dynamic_batch": False,
    "metadata": None,
}
# ExecuTorch's ScalarType codes (MethodMeta's TensorInfo.dtype()), as the runner maps them
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
           11: "bool"}


def resolve_options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = options_with_defaults(options, _OPTIONS, "ExecuTorch", hidden=("metadata", "dynamic_batch"))
    if opts["dynamic_batch"]:
        raise UsageError(
            "ExecuTorch export here uses static shapes: dynamic_batch is not supported",
            "export with a fixed batch (the example inputs' batch), or use onnx for a dynamic batch",
        )
    if opts["int8_mode"] not in ExecutorchFormat.int8_modes:
        raise UsageError(f"unknown int8_mode {opts['int8_mode']!r}", "choose 'static' or 'dynamic'")
    return opts


class ExecutorchFormat(BaseFormat):
    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "int8")
    int8_modes = ("static", "dynamic")
    # XNNPACK's dynamic quantization covers linear layers: convolutions keep float weights
    int8_float_module_types = {"dynamic": CONV_MODULE_TYPES}
    extra = EXTRA
    # the Python runtime links torch's libraries (the same version), and importing it needs three
    # small packages besides (found by importing it with only these on the path); the wheel's own
    # requirements are export tools, and coremltools has no aarch64 wheel
    device_runtimes = (DeviceRuntime("executorch", "executorch", default=False,
                                     device_requires=("torch==host", "numpy", "flatbuffers", "ruamel.yaml", "tabulate")),)

    def available(self) -> bool:
        return importlib.util.find_spec("executorch") is not None

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for dist in ("executorch", "torchao"):
            with contextlib.suppress(PackageNotFoundError):
                out[dist] = version(dist)
        return out

    def int8_weight_grid(self, precision: str, options: dict[str, Any] | None) -> str | None:
        opts = resolve_options(options)
        if precision != "int8" or opts["int8_mode"] != "static":
            return None
        return "per_channel" if opts["per_channel"] else "per_tensor"

    def converts_op(self, overloads: Sequence[Any], model: Any = None, examples: Sequence[Any] | None = None) -> bool:
        """ExecuTorch's registered kernels (the portable library and what this build links)."""
        with contextlib.suppress(Exception):
            with quiet():
                from executorch.runtime import Runtime

                registered = Runtime.get().operator_registry.operator_names
            return any(_kernel_name(o) in registered for o in overloads)
        return False

    # -- export -----------------------------------------------------------------------------

    def write(self, model: Any, examples: tuple[Any, ...], precision: str, out_path: Path, calibration: Any,
              options: dict[str, Any] | None) -> Written:
        opts = resolve_options(options)
        names = cal.input_names(model, len(examples))
        mode = opts["int8_mode"] if precision == "int8" else None
        if mode == "static":
            if calibration is None:
                raise UsageError("static int8 needs calibration data",
                                 "pass calibration= (100-500 representative inputs), or options={'int8_mode': 'dynamic'}")
            feeds = cal.to_feeds(calibration, names, "calibration data")
            cal.check_shapes(feeds, examples, names, "calibration data")
            graph, used = _quantized(model, examples, bool(opts["per_channel"]), False, feeds, names)
            summary = cal.summary(feeds, "histogram", weight_type="int8", activation_type="int8",
                                  per_channel=bool(opts["per_channel"]), samples_used=used)
            notes = [f"int8 static (PT2E, XNNPACKQuantizer): int8 per-{'channel' if opts['per_channel'] else 'tensor'}"
                     " weights, int8 activations; inputs and outputs stay float32"]
        elif mode == "dynamic":
            graph, _ = _quantized(model, examples, bool(opts["per_channel"]), True, None, names)
            summary = {"method": "dynamic", "n_samples": 0}
            notes = ["int8 dynamic (XNNPACK): int8 linear weights, activations quantized at run time; "
                     "convolutions stay float"]
        else:
            graph, summary, notes = model, None, []
        outputs = _output_names(model, examples)
        meta = {"edgekit": self.metadata(precision, {**opts, "int8_mode": mode}), "inputs": names, "outputs": outputs}
        out_path.write_bytes(_lower(graph, examples, model, json.dumps(meta, sort_keys=True)))
        return Written("executorch (XNNPACK)" + (" + PT2E (torchao)" if mode == "static" else ""), summary, notes)

    # -- inspect ----------------------------------------------------------------------------

    def inspect(self, path: Path) -> Artifact:
        """An Artifact for a ``.pte`` file as it is (I/O from its method metadata)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        if not self.available():
            raise MissingDependencyError("reading a .pte file needs executorch, which is not installed",
                                         f"pip install 'edgekit[{EXTRA}]'", extra=EXTRA)
        with quiet():
            from executorch.runtime import Runtime

            try:
                program = Runtime.get().load_program(path)
                method_meta = program.metadata("forward")
                stored = _stored_metadata(program)
            except Exception as exc:
                raise ExportError(f"{path.name} is not a readable ExecuTorch program: {exc}") from exc
        inputs = [_spec(method_meta.input_tensor_meta(i), stored.get("inputs"), i, "input")
                  for i in range(method_meta.num_inputs())]
        outputs = [_spec(method_meta.output_tensor_meta(i), stored.get("outputs"), i, "output")
                   for i in range(method_meta.num_outputs())]
        meta = stored.get("edgekit") or {}
        artifact = self.inspected(path, meta, meta.get("precision") or "fp32", inputs, outputs)
        if not stored:
            artifact.notes.append(f"{path.name} carries no edgekit metadata: its precision is assumed fp32")
        return artifact


FORMAT = ExecutorchFormat()


def _quantized(model: Any, examples: tuple[Any, ...], per_channel: bool, dynamic: bool,
               feeds: dict[str, np.ndarray] | None, names: list[str]) -> tuple[Any, int]:
    """The PT2E-converted graph (XNNPACKQuantizer) and the calibration samples used."""
    import torch
    from torchao.quantization.pt2e import quantize_pt2e

    prepare = _prepare_at(model, per_channel, dynamic)
    try:
        with quiet():
            prepared = prepare(examples)
    except Exception as exc:
        raise _export_error(exc, model, examples) from exc
    if feeds is not None:
        used = pt2e.calibrate(prepared, prepare, examples, feeds, names)
    else:  # dynamic: the weight observers still need one call to see the weights
        used = 0
        with torch.no_grad(), quiet():
            prepared(*examples)
    with quiet():
        return quantize_pt2e.convert_pt2e(prepared), used


def _prepare_at(model: Any, per_channel: bool, dynamic: bool) -> pt2e.PrepareAt:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import quantize_pt2e

    class EdgeXnnpackQuantizer(XNNPACKQuantizer):
        """XNNPACK's quantizer plus conv/linear→ReLU6 fusion and zero padding that keeps its
        input's parameters (edgekit.export.pt2e; XNNPACK's own patterns fuse ReLU only)."""

        def annotate(self, graph: Any) -> Any:
            if not dynamic:  # dynamic quantization observes weights only
                pt2e.annotate_fused_activations(graph, self.global_config)
            graph = super().annotate(graph)
            if not dynamic:
                pt2e.share_pad_quantization(graph)
            return graph

    def prepare(args: tuple[Any, ...]) -> Any:
        graph = torch.export.export(model, args, strict=False).module()
        config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic)
        quantizer = EdgeXnnpackQuantizer()
        # dynamic: linear layers only. XNNPACK's dynamically quantized convolutions ran but computed
        # garbage here (EfficientNet-Lite0: 0 % top-1 agreement, the PT2E simulation 94 %)
        quantizer = quantizer.set_module_type(torch.nn.Linear, config) if dynamic else quantizer.set_global(config)
        return quantize_pt2e.prepare_pt2e(graph, quantizer)

    return prepare


def _lower(graph: Any, examples: tuple[Any, ...], model_for_errors: Any, metadata: str) -> bytes:
    """The ``.pte`` bytes of ``graph`` lowered to XNNPACK, with the metadata method."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with quiet(), torch.no_grad():
            program = torch.export.export(graph, examples, strict=False)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               constant_methods={METADATA_METHOD: metadata})
            return edge.to_executorch().buffer
    except Exception as exc:
        raise _export_error(exc, model_for_errors, examples) from exc


def _output_names(model: Any, examples: tuple[Any, ...]) -> list[str]:
    import torch

    with torch.no_grad():
        count = len(cal.flatten_outputs(model(*examples)))
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _stored_metadata(program: Any) -> dict[str, Any]:
    if METADATA_METHOD not in program.method_names:
        return {}
    try:
        return json.loads(program.load_method(METADATA_METHOD).execute([])[0])
    except (ValueError, IndexError, TypeError, RuntimeError):
        return {}


def _spec(info: Any, names: list[str] | None, index: int, kind: str) -> TensorSpec:
    name = names[index] if names and index < len(names) else f"{kind}_{index}"
    return TensorSpec(name=name, shape=[int(s) for s in info.sizes()], dtype=_DTYPES.get(int(info.dtype()), "float32"))


def _kernel_name(overload: Any) -> str:
    """``aten::add.out``-style name of the out-variant kernel ExecuTorch registers for an overload."""
    name = overload.name() if callable(getattr(overload, "name", None)) else str(overload)
    return name.split(".")[0] + ".out"


_MISSING_KERNEL = ("Missing out variants", "missing out vars", "Operator missing")


def _export_error(exc: Exception, model: Any, examples: tuple[Any, ...]) -> ExportError:
    """A converter failure with what failed in it; an op without an ExecuTorch kernel names it."""
    text = exception_text(exc)
    match = re.search(r"(aten::[\w.]+|aten\.[\w.]+)", text) if any(m in text for m in _MISSING_KERNEL) else None
    if match:
        op = match.group(1).replace("::", ".").replace("aten.", "aten::", 1)
        return unsupported_op("executorch", op, op, "executorch", model, examples)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # ConverterError: edgekit.export.export names the module and the formats that do convert it
    return ConverterError(f"ExecuTorch conversion failed: {first[:300]}", "run with --debug for the converter's error")


__all__ = ["FORMAT", "ExecutorchFormat", "resolve_options"]
