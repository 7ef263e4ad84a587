"""TFLite (LiteRT) export through litert-torch; needs ``pip install 'edgekit[tflite]'``.

Precisions
  fp32  ``litert_torch.convert``.
  fp16  float16 weights (ai-edge-quantizer float casting; the runtime dequantizes or runs fp16).
  int8  ``int8_mode="full"`` (default): full-integer through PT2E — torch.export → torchao
        ``prepare_pt2e`` with litert's PT2EQuantizer (int8 per-channel symmetric weights, int8
        per-tensor activations) → calibration → ``convert_pt2e(fold_quantize=False)`` → convert.
        Input and output tensors are int8 (scale/zero-point in the manifest) unless
        ``io_dtype="float32"`` (QUANTIZE/DEQUANTIZE ops are added at the boundary).
        ``int8_mode="dynamic"``: dynamic-range int8 (int8 weights, float activations quantized
        at run time by the kernels; ai-edge-quantizer ``dynamic_wi8_afp32``), no calibration.

What edgekit adds to the plain library path (see docs/export.md for the measurements):
  * ReLU/ReLU6 fused into the conv/linear before quantization (litert's quantizer only knows
    conv+relu; conv+hardtanh got the conv's pre-clip range: ~17 levels for [0, 6]).
  * symmetric zero padding (``nn.ZeroPad2d``/``F.pad`` before a conv) folded into the conv.
  * residual chains kept integer (``convert_pt2e`` leaves an add reading another add's float
    output; routed through the dequantize so no float ADD + QUANTIZE remains).
  * a flatbuffer pass: TRANSPOSE→PAD→TRANSPOSE collapsed, PAD moved past layout transposes and
    folded into CONV_2D/DEPTHWISE_CONV_2D as SAME padding, identical per-channel zero-point
    vectors stored once, internal tensor names dropped (I/O names kept), edgekit metadata added.

Options: channels_last (False: NHWC inputs via ``litert_torch.to_channel_last_io``),
io_dtype ("int8" | "float32", full int8 only), int8_mode ("full" | "dynamic"),
calibration_method ("histogram" | "minmax"), per_channel (True), optimize (True), strip_names
(True), pt2e_fixes (True; False gives litert's quantizer as is, for ablations), weight_rounding
("gptq" | "nearest", full int8: see edgekit.export.rounding), prequantized (False; True: the
model is a converted PT2E program, e.g. after quantization-aware training, converted as it is
with litert's quantizer settings for ``per_channel``). Dynamic shapes (``dynamic_batch``) are
refused: TFLite models are exported with static shapes.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConverterError, ExportError, MissingDependencyError, UsageError
from edgekit.export import calibration as cal
from edgekit.export import pt2e
from edgekit.export.base import Artifact, BaseFormat, DeviceRuntime, TensorSpec, Written, options_with_defaults
from edgekit.export.converter import exception_text, quiet, unsupported_op
from edgekit.notes import detail

EXTRA = "tflite"
METADATA_NAME = "edgekit"
CALIBRATION_METHODS = ("histogram", "minmax")
_OPTIONS = {
    "channels_last": False,
    "io_dtype": "int8",
    "int8_mode": "full",
    "calibration_method": "histogram",
    "per_channel": True,
    "optimize": True,
    "strip_names": True,
    "pt2e_fixes": True,  # False: litert's PT2EQuantizer as is (for ablations)
    "dynamic_batch": False,
    "weight_rounding": "gptq",  # full int8: "gptq" or "nearest" (edgekit.export.rounding, applied by the api)
    "metadata": None,
    "prequantized": False,  # int8: the model is a converted PT2E program (QAT), converted as it is
}
_NUMPY_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8", 10: "float64"}


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{what} needs {module.replace('_', '-')}, which is not installed",
            "pip install 'edgekit[tflite]'",
            extra=EXTRA,
        )


def resolve_options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = options_with_defaults(options, _OPTIONS, "TFLite", hidden=("metadata", "dynamic_batch"))
    if opts["dynamic_batch"]:
        raise UsageError(
            "TFLite export needs static shapes: dynamic_batch is not supported",
            "export with a fixed batch (the example inputs' batch), or use onnx for a dynamic batch",
        )
    if opts["int8_mode"] not in ("full", "dynamic"):
        raise UsageError(f"unknown int8_mode {opts['int8_mode']!r}", "choose 'full' or 'dynamic'")
    if opts["io_dtype"] not in ("int8", "float32"):
        raise UsageError(f"unknown io_dtype {opts['io_dtype']!r}", "choose 'int8' or 'float32'")
    method = str(opts["calibration_method"]).lower()
    if method not in CALIBRATION_METHODS:
        raise UsageError(
            f"calibration method {method!r} is not available for TFLite",
            f"choose one of: {', '.join(CALIBRATION_METHODS)} (PT2E observers)",
        )
    opts["calibration_method"] = method
    return opts


class TfliteFormat(BaseFormat):
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8")
    int8_modes = ("full", "dynamic")
    # litert's PT2E quantizer annotates no embedding lookup: full-integer files keep the tables float
    int8_float_module_types = {"full": ("Embedding",)}
    extra = EXTRA
    device_runtimes = (
        DeviceRuntime("ai_edge_litert", "ai-edge-litert"),
        DeviceRuntime("tflite_runtime", "tflite-runtime"),
        DeviceRuntime("tensorflow", "tensorflow", default=False),  # ~1 GB: installed only when asked for
    )

    def available(self) -> bool:
        return importlib.util.find_spec("litert_torch") is not None

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for dist in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao"):
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                pass
        return out

    def int8_weight_grid(self, precision: str, options: dict[str, Any] | None) -> str | None:
        """"per_channel" or "per_tensor" when this export rounds weights to symmetric int8 from
        calibration (full-integer int8), else None."""
        opts = resolve_options(options)
        if precision != "int8" or opts["int8_mode"] != "full" or opts["prequantized"]:
            return None
        return "per_channel" if opts["per_channel"] else "per_tensor"

    def converts_op(self, overloads: Sequence[Any], model: Any = None, examples: Sequence[Any] | None = None) -> bool:
        """litert-torch's lowering registry."""
        with contextlib.suppress(Exception):
            from litert_torch.backend import lowerings

            return any(lowerings.lookup(o) is not None for o in overloads)
        return False

    # -- export -----------------------------------------------------------------------------

    def write(self, model: Any, examples: tuple[Any, ...], precision: str, out_path: Path, calibration: Any,
              options: dict[str, Any] | None) -> Written:
        opts = resolve_options(options)
        if opts["prequantized"] and precision != "int8":
            raise UsageError("prequantized applies to int8 only", "export precision='int8'")
        nhwc = [i for i, e in enumerate(examples) if e.dim() == 4] if opts["channels_last"] else []
        if opts["channels_last"] and not nhwc:
            raise UsageError("channels_last needs a 4-D (N, C, H, W) input", "the model has no 4-D input")
        with tempfile.TemporaryDirectory(prefix="edgekit-tflite-") as tmp:
            raw = Path(tmp) / "model.tflite"
            written = _convert_at(model, examples, precision, raw, calibration, opts, nhwc)
            mode = "prequantized" if opts["prequantized"] else opts["int8_mode"]
            passes = finish(
                raw,
                out_path,
                self.metadata(precision, {**opts, "int8_mode": mode}),
                optimize=bool(opts["optimize"]),
                strip_names=bool(opts["strip_names"]),
                float_io=precision == "int8" and mode == "full" and opts["io_dtype"] == "float32",
            )
        if passes:
            written.notes.append(detail("flatbuffer passes: " + ", ".join(f"{k} {v}" for k, v in passes.items() if v)))

        def layout_notes(artifact: Artifact) -> list[str]:
            from edgekit.export.parity import layout_note

            return [layout_note(artifact.inputs[i].name) for i in nhwc]

        written.more_notes = layout_notes
        return written

    # -- inspect ----------------------------------------------------------------------------

    def inspect(self, path: Path) -> Artifact:
        """An Artifact for a ``.tflite`` file as it is (I/O and quantization from the flatbuffer)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        schema = _schema()
        data = path.read_bytes()
        try:
            if not schema.Model.ModelBufferHasIdentifier(data, 0):
                raise ValueError("no TFL3 identifier")
            model = schema.Model.GetRootAs(data, 0)
            sg = model.Subgraphs(0)
        except Exception as exc:
            raise ExportError(f"{path.name} is not a readable TFLite model: {exc}") from exc
        inputs = [_spec_of(sg.Tensors(sg.Inputs(i))) for i in range(sg.InputsLength())]
        outputs = [_spec_of(sg.Tensors(sg.Outputs(i))) for i in range(sg.OutputsLength())]
        meta = _read_metadata(model, data)
        precision = meta.get("precision") or _guess_precision(model, sg)
        artifact = self.inspected(path, meta, precision, inputs, outputs)
        if any(s.shape and any(isinstance(d, str) for d in s.shape) for s in inputs):
            artifact.notes.append("dynamic input dimensions: the runtime resizes inputs per call")
        return artifact


FORMAT = TfliteFormat()


def _convert_at(model: Any, examples: tuple[Any, ...], precision: str, raw: Path, calibration: Any,
                opts: dict[str, Any], nhwc: list[int]) -> Written:
    """The converter's ``.tflite`` at ``raw`` for ``precision`` (before edgekit's flatbuffer passes)."""
    if precision == "int8" and opts["prequantized"]:
        torch2tflite_program(model, examples, raw, bool(opts["per_channel"]), nhwc)
        return Written("litert-torch + PT2E (torchao)", {"method": "pt2e program", "n_samples": 0},
                       ["int8 from a quantized PT2E program (QAT), converted as it is"])
    if precision == "int8" and opts["int8_mode"] == "full":
        if calibration is None:
            raise UsageError(
                "full-integer int8 needs calibration data",
                "pass calibration= (100-500 representative inputs), or options={'int8_mode': 'dynamic'}",
            )
        names = cal.input_names(model, len(examples))
        feeds = cal.to_feeds(calibration, names, "calibration data")
        cal.check_shapes(feeds, examples, names, "calibration data")
        stats = torch2tflite_int8(model, examples, feeds, names, raw, opts, nhwc)
        summary = cal.summary(feeds, opts["calibration_method"], weight_type="int8", activation_type="int8",
                              per_channel=bool(opts["per_channel"]), **stats)
        return Written("litert-torch + PT2E (torchao)", summary, [
            f"int8 full-integer (PT2E): int8 per-{'channel' if opts['per_channel'] else 'tensor'} weights, "
            f"int8 activations, {opts['io_dtype']} inputs/outputs"])
    torch2tflite(model, examples, raw, nhwc)
    if precision == "fp16":
        _float16(raw)
        return Written("litert-torch", notes=["fp16 weights; inputs and outputs stay float32"])
    if precision == "int8":
        _dynamic_range(raw)
        return Written("litert-torch", {"method": "dynamic", "n_samples": 0},
                       ["int8 dynamic range: int8 weights, float activations quantized by the kernels"])
    return Written("litert-torch")


# -- torch → TFLite ----------------------------------------------------------------------------


def _convert(module: Any, examples: tuple[Any, ...], out: Path, model_for_errors: Any, **kwargs: Any) -> None:
    import litert_torch

    try:
        with quiet():
            edge = litert_torch.convert(module, examples, **kwargs)
            edge.export(str(out))
    except Exception as exc:
        raise _export_error(exc, model_for_errors, examples) from exc
    if not out.is_file():  # pragma: no cover - defensive
        raise ExportError("litert-torch wrote no file")


def _channels_last(model: Any, examples: tuple[Any, ...], nhwc: list[int]) -> tuple[Any, tuple[Any, ...]]:
    if not nhwc:
        return model, examples
    import litert_torch

    wrapped = litert_torch.to_channel_last_io(model, args=nhwc).eval()
    moved = tuple(e.permute(0, 2, 3, 1).contiguous() if i in nhwc else e for i, e in enumerate(examples))
    return wrapped, moved


def torch2tflite(model: Any, examples: tuple[Any, ...], out: Path, nhwc: list[int] | None = None) -> None:
    """fp32 ``.tflite`` at ``out``."""
    module, args = _channels_last(model, examples, nhwc or [])
    _convert(module, args, out, model)


def torch2tflite_int8(
    model: Any,
    examples: tuple[Any, ...],
    feeds: dict[str, np.ndarray],
    names: list[str],
    out: Path,
    opts: dict[str, Any],
    nhwc: list[int] | None = None,
) -> dict[str, Any]:
    """Full-integer int8 ``.tflite`` through PT2E; returns counts of the graph fixes applied."""
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    nhwc = nhwc or []
    module, args = _channels_last(model, examples, nhwc)
    try:
        with quiet():
            graph = torch.export.export(module, args, strict=False).module()
    except Exception as exc:
        raise _export_error(exc, model, examples) from exc
    fixes = bool(opts["pt2e_fixes"])
    folded = fold_pads(graph) if fixes else 0
    config = pq.get_symmetric_quantization_config(is_per_channel=bool(opts["per_channel"]))
    if opts["calibration_method"] == "minmax":
        config = _with_minmax_activations(config)
    quantizer = (EdgeQuantizer() if fixes else pq.PT2EQuantizer()).set_global(config)
    with quiet():
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
    used = pt2e.calibrate(prepared, _prepare_at(module, config, fixes), args, feeds, names, nhwc)
    with quiet():
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    rerouted = route_through_dq(converted) if fixes else 0
    _convert(converted, args, out, model, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    return {"samples_used": used, "pads_folded": folded, "float_edges_rerouted": rerouted}


def _prepare_at(module: Any, config: Any, fixes: bool) -> Any:
    """``module`` exported for given inputs and prepared like ``torch2tflite_int8``'s graph
    (edgekit.export.pt2e calibrates a batch-1 graph through a wider copy)."""
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e import quantize_pt2e

    def prepare(args: tuple[Any, ...]) -> Any:
        graph = torch.export.export(module, args, strict=False).module()
        if fixes:
            fold_pads(graph)
        quantizer = (EdgeQuantizer() if fixes else pq.PT2EQuantizer()).set_global(config)
        return quantize_pt2e.prepare_pt2e(graph, quantizer)

    return prepare


def torch2tflite_program(program: Any, examples: tuple[Any, ...], out: Path, per_channel: bool,
                         nhwc: list[int] | None = None) -> None:
    """int8 ``.tflite`` at ``out`` from a converted PT2E program (quantization-aware training's),
    with the settings of litert's quantizer it was prepared with."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=per_channel))
    module, args = _channels_last(program, examples, nhwc or [])
    _convert(module, args, out, program, quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _with_minmax_activations(config: Any) -> Any:
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver

    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)


_LOWERING_RE = re.compile(r"Lowering not found: ([\w.]+)")
_EXEC_RE = re.compile(r"While executing %(\w+)")


def _export_error(exc: Exception, model: Any, examples: tuple[Any, ...]) -> ExportError:
    text = exception_text(exc)
    match = _LOWERING_RE.search(text)
    if match:
        op = match.group(1)
        node = _EXEC_RE.search(text)
        return unsupported_op("litert-torch", op, op, "tflite", model, examples, node.group(1) if node else None,
                              trial=True)
    if "GuardOnDataDependentSymNode" in text or "data-dependent" in text.lower():
        return ExportError(
            "TFLite export needs static shapes, but the model has data-dependent shapes",
            "avoid ops whose output size depends on values (nonzero, masked_select, unique), or export to onnx",
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # ConverterError: edgekit.export.export names the module and the formats that do convert it
    return ConverterError(f"TFLite conversion failed: {first[:300]}", "run with --debug for the converter's error")


# -- PT2E graph fixes --------------------------------------------------------------------------


def _make_quantizer_class() -> type:
    from litert_torch.quantize import pt2e_quantizer as pq

    class _EdgeQuantizer(pq.PT2EQuantizer):
        """litert's PT2EQuantizer plus conv/linear→ReLU6 fusion and zero padding that keeps
        its input's quantization parameters (edgekit.export.pt2e)."""

        def annotate(self, model: Any) -> Any:
            pt2e.annotate_fused_activations(model, self.global_config)
            model = super().annotate(model)
            pt2e.share_pad_quantization(model)
            return model

    return _EdgeQuantizer


def EdgeQuantizer() -> Any:  # noqa: N802 - a class made on first use (litert imports lazily)
    global _QUANTIZER_CLASS
    if _QUANTIZER_CLASS is None:
        _QUANTIZER_CLASS = _make_quantizer_class()
    return _QUANTIZER_CLASS()


_QUANTIZER_CLASS: type | None = None


def fold_pads(gm: Any) -> int:
    """Fold symmetric zero padding of a conv2d's input into the conv's own padding."""
    aten = pt2e.aten()
    pads = {aten.pad.default, aten.constant_pad_nd.default}
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != aten.conv2d.default:
            continue
        src = node.args[0]
        if getattr(src, "target", None) not in pads or len(src.users) != 1 or not pt2e.zero_constant_pad(src):
            continue
        amounts = list(src.args[1])
        if len(amounts) != 4:
            continue
        left, right, top, bottom = amounts
        if left != right or top != bottom:
            continue
        args = list(node.args) + [None] * (7 - len(node.args))
        defaults = {3: [1, 1], 4: [0, 0], 5: [1, 1], 6: 1}
        for i, value in defaults.items():
            if args[i] is None:
                args[i] = node.kwargs.get(("stride", "padding", "dilation", "groups")[i - 3], value)
        padding = args[4]
        if isinstance(padding, str):
            continue
        padding = list(padding) * 2 if len(padding) == 1 else list(padding)
        args[0] = src.args[0]
        args[4] = [padding[0] + top, padding[1] + left]
        node.args = tuple(args)
        node.kwargs = {}
        gm.graph.erase_node(src)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded


def route_through_dq(gm: Any) -> int:
    """Make every float consumer of a quantized tensor read its dequantized value.

    ``convert_pt2e`` leaves a residual add reading the previous add's float output directly
    (the tensor is quantized for its other users); the converter then keeps that ADD in float
    between DEQUANTIZE/QUANTIZE. Reading the DQ instead is what the int8 runtime computes.
    """
    import torch

    qd = torch.ops.quantized_decomposed
    q_ops = {qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor}
    dq_ops = {qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor}
    fixed = 0
    for node in list(gm.graph.nodes):
        quants = [u for u in node.users if u.target in q_ops]
        if not quants:
            continue
        dqs = [u for u in quants[0].users if u.target in dq_ops]
        if not dqs:
            continue
        for user in list(node.users):
            if user.target in q_ops or user.op == "output":
                continue
            user.replace_input_with(node, dqs[0])
            fixed += 1
    if fixed:
        gm.graph.lint()
        gm.recompile()
    return fixed


# -- ai-edge-quantizer recipes (fp16, dynamic range) ------------------------------------------


def _float16(path: Path) -> None:
    _need("ai_edge_quantizer", "fp16 TFLite export")
    from ai_edge_quantizer import qtyping, quantizer

    with quiet():
        q = quantizer.Quantizer(str(path))
        q.update_quantization_recipe(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
        )
        result = q.quantize(enable_progress_report=False)
    path.write_bytes(bytes(result.quantized_model))


def _dynamic_range(path: Path) -> None:
    _need("ai_edge_quantizer", "dynamic-range int8 TFLite export")
    from ai_edge_quantizer import quantizer, recipe

    with quiet():
        q = quantizer.Quantizer(str(path), recipe.dynamic_wi8_afp32())
        result = q.quantize(enable_progress_report=False)
    path.write_bytes(bytes(result.quantized_model))


# -- flatbuffer passes -------------------------------------------------------------------------


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from litert_converter import schema_py_generated as schema  # type: ignore[no-redef]
        except ImportError as exc:
            raise MissingDependencyError(
                "reading .tflite files needs ai-edge-litert", "pip install 'edgekit[tflite]'", extra=EXTRA
            ) from exc
    return schema


def finish(src: Path, dst: Path, meta: dict[str, str], optimize: bool = True, strip_names: bool = True, float_io: bool = False) -> dict[str, int]:
    """Apply the flatbuffer passes to ``src`` and write ``dst``; returns what each pass changed."""
    schema = _schema()
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    graph = _Graph(model, schema)
    counts: dict[str, int] = {}
    if float_io:
        counts["float_io_ops"] = graph.float_io()
    if optimize:
        counts.update(graph.optimize())
    graph.compact()
    if strip_names:
        counts["names_dropped"] = graph.strip_names()
    graph.set_metadata(METADATA_NAME, json.dumps(meta, sort_keys=True).encode())
    dst.write_bytes(graph.pack())
    return counts


class _Graph:
    """Edits of a TFLite ModelT (object API): layout peepholes, float I/O, compaction, metadata."""

    def __init__(self, model: Any, schema: Any) -> None:
        self.m = model
        self.s = schema
        self.op = schema.BuiltinOperator

    # helpers
    def code(self, op: Any) -> int:
        oc = self.m.operatorCodes[op.opcodeIndex]
        return max(oc.builtinCode, oc.deprecatedBuiltinCode)

    def opcode_index(self, builtin: int, version: int = 1) -> int:
        for i, oc in enumerate(self.m.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin and oc.version == version:
                return i
        oc = self.s.OperatorCodeT()
        oc.builtinCode = builtin
        oc.deprecatedBuiltinCode = min(builtin, 127)
        oc.version = version
        self.m.operatorCodes.append(oc)
        return len(self.m.operatorCodes) - 1

    def const(self, sg: Any, index: int) -> np.ndarray | None:
        tensor = sg.tensors[index]
        buf = self.m.buffers[tensor.buffer]
        if buf is None or buf.data is None or len(buf.data) == 0:
            return None
        dtype = np.dtype(_NUMPY_TYPES.get(tensor.type, "uint8"))
        return np.frombuffer(bytes(np.asarray(buf.data, dtype=np.uint8)), dtype=dtype).reshape(list(tensor.shape))

    def new_const(self, sg: Any, array: np.ndarray, name: str) -> int:
        buf = self.s.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8).copy()
        self.m.buffers.append(buf)
        tensor = self.s.TensorT()
        tensor.shape = list(array.shape)
        tensor.type = {np.dtype("int32"): self.s.TensorType.INT32, np.dtype("int64"): self.s.TensorType.INT64}[array.dtype]
        tensor.buffer = len(self.m.buffers) - 1
        tensor.name = name
        sg.tensors.append(tensor)
        return len(sg.tensors) - 1

    def new_like(self, sg: Any, index: int, shape: list[int], name: str) -> int:
        tensor = copy.deepcopy(sg.tensors[index])
        tensor.shape = list(shape)
        if tensor.shapeSignature is not None:
            tensor.shapeSignature = list(shape)
        tensor.name = name
        sg.tensors.append(tensor)
        return len(sg.tensors) - 1

    @staticmethod
    def _users(sg: Any) -> dict[int, list[int]]:
        users: dict[int, list[int]] = {}
        for i, op in enumerate(sg.operators):
            for t in op.inputs:
                if t >= 0:
                    users.setdefault(t, []).append(i)
        return users

    @staticmethod
    def _producers(sg: Any) -> dict[int, int]:
        return {t: i for i, op in enumerate(sg.operators) for t in op.outputs}

    def _same_quant(self, sg: Any, a: int, b: int) -> bool:
        qa, qb = sg.tensors[a].quantization, sg.tensors[b].quantization

        def key(q: Any) -> tuple:
            if q is None or q.scale is None or len(q.scale) == 0:
                return ()
            return (tuple(np.asarray(q.scale, np.float32).tolist()), tuple(np.asarray(q.zeroPoint if q.zeroPoint is not None else [], np.int64).tolist()))

        return key(qa) == key(qb)

    # peepholes
    def optimize(self) -> dict[str, int]:
        counts = {"transpose_pad_transpose": 0, "pad_before_transpose": 0, "pad_into_conv": 0}
        for sg in self.m.subgraphs:
            changed = True
            while changed:
                changed = False
                for rule, key in ((self._t_pad_t, "transpose_pad_transpose"), (self._pad_t, "pad_before_transpose"), (self._pad_conv, "pad_into_conv")):
                    if rule(sg):
                        counts[key] += 1
                        changed = True
                        break
        return counts

    def _graph_outputs(self, sg: Any) -> set[int]:
        return set(sg.outputs)

    def _perm(self, sg: Any, op: Any) -> list[int] | None:
        perm = self.const(sg, op.inputs[1]) if len(op.inputs) > 1 else None
        return None if perm is None else [int(p) for p in perm.reshape(-1)]

    def _pads(self, sg: Any, op: Any) -> np.ndarray | None:
        pads = self.const(sg, op.inputs[1]) if len(op.inputs) > 1 else None
        return None if pads is None else pads.reshape(-1, 2).astype(np.int64)

    def _sole_reader(self, sg: Any, users: dict[int, list[int]], outs: set[int], tensor: int,
                     codes: tuple[int, ...]) -> int | None:
        """The index of the one operator that reads ``tensor`` when its code is one of ``codes``
        and nothing else reads it (no other operator, not the graph's outputs); else None."""
        after = users.get(tensor, [])
        if len(after) != 1 or tensor in outs or self.code(sg.operators[after[0]]) not in codes:
            return None
        return after[0]

    def _t_pad_t(self, sg: Any) -> bool:
        users, producers, outs = self._users(sg), self._producers(sg), self._graph_outputs(sg)
        for i, op in enumerate(sg.operators):
            if self.code(op) != self.op.PAD:
                continue
            a, b = op.inputs[0], op.outputs[0]
            t1 = producers.get(a)
            if t1 is None or self.code(sg.operators[t1]) != self.op.TRANSPOSE or users.get(a) != [i] or a in outs:
                continue
            t2 = self._sole_reader(sg, users, outs, b, (self.op.TRANSPOSE,))
            if t2 is None:
                continue
            p1, p2, pads = self._perm(sg, sg.operators[t1]), self._perm(sg, sg.operators[t2]), self._pads(sg, op)
            if p1 is None or p2 is None or pads is None or len(p1) != len(p2) or any(p1[p2[k]] != k for k in range(len(p1))):
                continue
            x, c = sg.operators[t1].inputs[0], sg.operators[t2].outputs[0]
            new = np.zeros_like(pads)
            for k in range(len(p1)):
                new[p1[k]] = pads[k]
            op.inputs = [x, self.new_const(sg, new.astype(np.int32), "paddings")]
            op.outputs = [c]
            for j in sorted((t1, t2), reverse=True):
                del sg.operators[j]
            return True
        return False

    def _pad_t(self, sg: Any) -> bool:
        users, outs = self._users(sg), self._graph_outputs(sg)
        for i, op in enumerate(sg.operators):
            if self.code(op) != self.op.PAD:
                continue
            x, b = op.inputs[0], op.outputs[0]
            j = self._sole_reader(sg, users, outs, b, (self.op.TRANSPOSE,))
            if j is None:
                continue
            t = sg.operators[j]
            perm, pads = self._perm(sg, t), self._pads(sg, op)
            if perm is None or pads is None or len(perm) != len(pads):
                continue
            # only worth it when the transposed pad can then fold into a conv
            nxt = users.get(t.outputs[0], [])
            if len(nxt) != 1 or self.code(sg.operators[nxt[0]]) not in (self.op.CONV_2D, self.op.DEPTHWISE_CONV_2D):
                continue
            c = t.outputs[0]
            xshape = list(sg.tensors[x].shape)
            moved = self.new_like(sg, x, [xshape[p] for p in perm], "transposed")
            new = np.stack([pads[perm[k]] for k in range(len(perm))]).astype(np.int32)
            pad_code, pad_type, pad_opts = op.opcodeIndex, op.builtinOptionsType, op.builtinOptions
            op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = t.opcodeIndex, t.builtinOptionsType, t.builtinOptions
            op.inputs, op.outputs = [x, t.inputs[1]], [moved]
            t.opcodeIndex, t.builtinOptionsType, t.builtinOptions = pad_code, pad_type, pad_opts
            t.inputs, t.outputs = [moved, self.new_const(sg, new, "paddings")], [c]
            return True
        return False

    def _pad_conv(self, sg: Any) -> bool:
        users, outs = self._users(sg), self._graph_outputs(sg)
        for i, op in enumerate(sg.operators):
            if self.code(op) != self.op.PAD:
                continue
            x, b = op.inputs[0], op.outputs[0]
            reader = self._sole_reader(sg, users, outs, b, (self.op.CONV_2D, self.op.DEPTHWISE_CONV_2D))
            if reader is None or sg.operators[reader].inputs[0] != b:
                continue
            conv = sg.operators[reader]
            opts = conv.builtinOptions
            if opts is None or opts.padding != self.s.Padding.VALID:
                continue
            pads = self._pads(sg, op)
            xshape = list(sg.tensors[x].shape)
            wshape = list(sg.tensors[conv.inputs[1]].shape)
            if pads is None or pads.shape != (4, 2) or len(xshape) != 4 or len(wshape) != 4:
                continue
            if pads[0].any() or pads[3].any() or not self._same_quant(sg, x, b):
                continue
            ok = True
            for axis, k, stride, dil in ((1, wshape[1], opts.strideH, opts.dilationHFactor or 1), (2, wshape[2], opts.strideW, opts.dilationWFactor or 1)):
                size = xshape[axis]
                out = -(-size // stride)
                total = max((out - 1) * stride + (k - 1) * dil + 1 - size, 0)
                if (int(pads[axis][0]), int(pads[axis][1])) != (total // 2, total - total // 2):
                    ok = False
            if not ok:
                continue
            conv.inputs = [x] + list(conv.inputs[1:])
            opts.padding = self.s.Padding.SAME
            del sg.operators[i]
            return True
        return False

    # float I/O around a full-integer model
    def float_io(self) -> int:
        added = 0
        quantize = self.opcode_index(self.op.QUANTIZE, 1)
        dequantize = self.opcode_index(self.op.DEQUANTIZE, 2)
        int_types = (self.s.TensorType.INT8, self.s.TensorType.UINT8, self.s.TensorType.INT16)
        for sg_index, sg in enumerate(self.m.subgraphs):
            remap: dict[int, int] = {}
            front, back = [], []
            for pos, t in enumerate(list(sg.inputs)):
                if sg.tensors[t].type not in int_types:
                    continue
                f = self._float_twin(sg, t)
                sg.inputs[pos] = f
                remap[t] = f
                q = self.s.OperatorT()
                q.opcodeIndex, q.inputs, q.outputs = quantize, [f], [t]
                front.append(q)
            for pos, t in enumerate(list(sg.outputs)):
                if sg.tensors[t].type not in int_types:
                    continue
                f = self._float_twin(sg, t)
                sg.outputs[pos] = f
                remap[t] = f
                d = self.s.OperatorT()
                d.opcodeIndex, d.inputs, d.outputs = dequantize, [t], [f]
                back.append(d)
            sg.operators = front + list(sg.operators) + back
            added += len(front) + len(back)
            for sig in self.m.signatureDefs or []:
                if sig.subgraphIndex != sg_index:
                    continue
                for tmap in list(sig.inputs or []) + list(sig.outputs or []):
                    tmap.tensorIndex = remap.get(tmap.tensorIndex, tmap.tensorIndex)
        return added

    def _float_twin(self, sg: Any, index: int) -> int:
        src = sg.tensors[index]
        twin = self.s.TensorT()
        twin.shape = list(src.shape)
        twin.shapeSignature = list(src.shapeSignature) if src.shapeSignature is not None else None
        twin.type = self.s.TensorType.FLOAT32
        twin.buffer = 0
        twin.name = src.name
        src.name = (src.name.decode() if isinstance(src.name, bytes) else str(src.name or "")) + "_int8"
        sg.tensors.append(twin)
        return len(sg.tensors) - 1

    # size
    def compact(self) -> None:
        """Drop tensors no op, graph I/O or signature uses, then buffers nothing points at."""
        for sg_index, sg in enumerate(self.m.subgraphs):
            used = set(sg.inputs) | set(sg.outputs)
            for op in sg.operators:
                used.update(t for t in op.inputs if t >= 0)
                used.update(op.outputs)
                used.update(op.intermediates or [])
            for sig in self.m.signatureDefs or []:
                if sig.subgraphIndex == sg_index:
                    used.update(m.tensorIndex for m in list(sig.inputs or []) + list(sig.outputs or []))
            order = sorted(used)
            new = {old: i for i, old in enumerate(order)}
            sg.tensors = [sg.tensors[i] for i in order]
            sg.inputs = [new[t] for t in sg.inputs]
            sg.outputs = [new[t] for t in sg.outputs]
            for op in sg.operators:
                op.inputs = [new[t] if t >= 0 else t for t in op.inputs]
                op.outputs = [new[t] for t in op.outputs]
                if op.intermediates:
                    op.intermediates = [new[t] for t in op.intermediates]
            for sig in self.m.signatureDefs or []:
                if sig.subgraphIndex == sg_index:
                    for tmap in list(sig.inputs or []) + list(sig.outputs or []):
                        tmap.tensorIndex = new[tmap.tensorIndex]
        referenced = {0}
        for sg in self.m.subgraphs:
            referenced.update(t.buffer for t in sg.tensors)
        referenced.update(md.buffer for md in self.m.metadata or [])
        order = sorted(b for b in referenced if b < len(self.m.buffers))
        new = {old: i for i, old in enumerate(order)}
        self.m.buffers = [self.m.buffers[i] for i in order]
        for sg in self.m.subgraphs:
            for t in sg.tensors:
                t.buffer = new.get(t.buffer, 0)
        for md in self.m.metadata or []:
            md.buffer = new[md.buffer]
        if getattr(self.m, "metadataBuffer", None):
            self.m.metadataBuffer = [new[b] for b in self.m.metadataBuffer if b in new]

    def strip_names(self) -> int:
        dropped = 0
        for sg in self.m.subgraphs:
            keep = set(sg.inputs) | set(sg.outputs)
            for i, t in enumerate(sg.tensors):
                if i not in keep and t.name:
                    t.name = None
                    dropped += 1
        return dropped

    def set_metadata(self, name: str, payload: bytes) -> None:
        entries = [md for md in (self.m.metadata or []) if (md.name.decode() if isinstance(md.name, bytes) else md.name) != name]
        buf = self.s.BufferT()
        buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
        self.m.buffers.append(buf)
        md = self.s.MetadataT()
        md.name = name
        md.buffer = len(self.m.buffers) - 1
        self.m.metadata = entries + [md]

    def pack(self) -> bytes:
        import flatbuffers

        _install_packers(self.s)
        for sg in self.m.subgraphs:
            for t in sg.tensors:
                if t.quantization is not None:
                    t.quantization.__class__ = _PACKERS["quant"]
        for b in self.m.buffers:
            b.__class__ = _PACKERS["buffer"]
        builder = flatbuffers.Builder(1 << 20)
        _VECTOR_CACHE[id(builder)] = {}
        try:
            root = self.m.Pack(builder)
        finally:
            _VECTOR_CACHE.pop(id(builder), None)
        builder.Finish(root, file_identifier=b"TFL3")
        return bytes(builder.Output())


_VECTOR_CACHE: dict[int, dict[tuple, int]] = {}
_PACKERS: dict[str, type] = {}


def _install_packers(schema: Any) -> None:
    """ModelT.Pack with two differences: identical quantization vectors (per-channel zero points
    are all zeros) are written once and shared, and buffer data is 16-byte aligned."""
    if _PACKERS:
        return

    def shared_vector(builder: Any, values: Any, dtype: str) -> int:
        arr = np.asarray(values, dtype=dtype).reshape(-1)
        cache = _VECTOR_CACHE.setdefault(id(builder), {})
        key = (dtype, arr.tobytes())
        if key not in cache:
            cache[key] = builder.CreateNumpyVector(arr)
        return cache[key]

    class SharedQuantizationParameters(schema.QuantizationParametersT):
        def Pack(self, builder: Any) -> int:  # noqa: N802 - flatbuffers' name
            vectors = {}
            for field, dtype in (("min", "<f4"), ("max", "<f4"), ("scale", "<f4"), ("zeroPoint", "<i8")):
                value = getattr(self, field)
                if value is not None:
                    vectors[field] = shared_vector(builder, value, dtype)
            details = self.details.Pack(builder) if self.details is not None else None
            schema.QuantizationParametersStart(builder)
            if "min" in vectors:
                schema.QuantizationParametersAddMin(builder, vectors["min"])
            if "max" in vectors:
                schema.QuantizationParametersAddMax(builder, vectors["max"])
            if "scale" in vectors:
                schema.QuantizationParametersAddScale(builder, vectors["scale"])
            if "zeroPoint" in vectors:
                schema.QuantizationParametersAddZeroPoint(builder, vectors["zeroPoint"])
            schema.QuantizationParametersAddDetailsType(builder, self.detailsType)
            if details is not None:
                schema.QuantizationParametersAddDetails(builder, details)
            schema.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            return schema.QuantizationParametersEnd(builder)

    class AlignedBuffer(schema.BufferT):
        def Pack(self, builder: Any) -> int:  # noqa: N802 - flatbuffers' name
            data = None
            if self.data is not None:
                payload = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    _PACKERS["quant"] = SharedQuantizationParameters
    _PACKERS["buffer"] = AlignedBuffer


# -- inspect helpers ---------------------------------------------------------------------------


def _spec_of(tensor: Any) -> TensorSpec:
    name = tensor.Name()
    name = name.decode() if isinstance(name, bytes) else str(name or "")
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    if tensor.ShapeSignatureLength():
        sig = [int(d) for d in tensor.ShapeSignatureAsNumpy()]
        shape = [d if d >= 0 else "dynamic" for d in sig]
    dtype = _NUMPY_TYPES.get(tensor.Type(), str(tensor.Type()))
    quant = None
    q = tensor.Quantization()
    if q is not None and q.ScaleLength() == 1 and dtype in ("int8", "uint8", "int16"):
        quant = {"scale": float(q.Scale(0)), "zero_point": int(q.ZeroPoint(0)) if q.ZeroPointLength() else 0, "dtype": dtype}
    return TensorSpec(name=name, shape=shape, dtype=dtype, quantization=quant)


def _read_metadata(model: Any, data: bytes) -> dict[str, str]:
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        name = md.Name()
        if (name.decode() if isinstance(name, bytes) else name) != METADATA_NAME:
            continue
        buf = model.Buffers(md.Buffer())
        if buf.DataLength():
            raw = buf.DataAsNumpy().tobytes()
        elif buf.Offset():
            raw = data[buf.Offset() : buf.Offset() + buf.Size()]
        else:
            return {}
        try:
            return {str(k): str(v) for k, v in json.loads(raw.decode()).items()}
        except (ValueError, UnicodeDecodeError):
            return {}
    return {}


def _guess_precision(model: Any, sg: Any) -> str:
    io = {sg.Inputs(i) for i in range(sg.InputsLength())} | {sg.Outputs(i) for i in range(sg.OutputsLength())}
    weights: dict[str, int] = {}
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        if i in io or t.Buffer() == 0:
            continue
        buf = model.Buffers(t.Buffer())
        size = buf.DataLength() or buf.Size()
        if size:
            dtype = _NUMPY_TYPES.get(t.Type(), "other")
            weights[dtype] = weights.get(dtype, 0) + size
    if weights.get("int8", 0) >= max(weights.get("float32", 0), weights.get("float16", 0)):
        return "int8" if weights.get("int8") else "fp32"
    if weights.get("float16", 0) > weights.get("float32", 0):
        return "fp16"
    return "fp32"


__all__ = ["FORMAT", "EdgeQuantizer", "TfliteFormat", "finish", "fold_pads", "resolve_options", "route_through_dq",
           "torch2tflite", "torch2tflite_int8", "torch2tflite_program"]
