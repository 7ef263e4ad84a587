"""ONNX export: torch.onnx (dynamo) for fp32, onnxruntime's tools for fp16 and int8.

Precisions
  fp32  ``torch.onnx.export(dynamo=True)``: one self-contained ``.onnx`` (weights inside, no
        ``.onnx.data`` side file; ONNX's 2 GB protobuf limit applies).
  fp16  weights and compute in float16 (onnxruntime's float16 converter); inputs and outputs stay
        float32 unless ``keep_io_types=False``, so callers feed what they fed the fp32 model.
  int8  ``int8_mode="static"`` (default): QDQ static quantization with calibration data,
        ``quant_pre_process`` first, int8 per-channel symmetric weights and, by default, uint8
        asymmetric activations (``activation_type="uint8"``). On x86 ONNX Runtime fuses only u8
        activations into QLinearConv/QLinearAdd when a tensor fans out (residual adds); s8
        activations (``activation_type="int8"``) leave those convs in float behind
        Transpose/Dequantize pairs. Biases stay float (``quantize_bias=False``): ORT quantizes
        them itself when it fuses, and the file is ~4 % smaller.
        ``int8_mode="dynamic"``: weights int8, activations quantized at run time, for
        MatMul/Gemm-heavy models (MLPs, transformers); convolutions stay float.

Options (``options=`` of ``export``)
  opset (18), dynamic_batch (False), int8_mode ("static" | "dynamic"), calibration_method
  ("minmax" | "percentile" | "entropy"), calibration_percentile (99.999), activation_type ("uint8" | "int8"), per_channel (True),
  weight_type ("int8" | "uint8": the same symmetric values stored +128, for x86 targets),
  quantize_bias (False), keep_io_types (True, fp16), float_modules ([] — torch module names, e.g.
  "_conv_stem", whose ONNX nodes stay float: mixed precision for sensitive layers),
  nodes_to_exclude ([] — ONNX node names kept in float), input_names / output_names,
  weight_rounding ("gptq" | "nearest", static int8: see edgekit.export.rounding),
  activation_symmetric (False; True with activation_type="int8": int8 activations with zero point 0,
  what some accelerators require), prequantized (False; True: the model is a converted PT2E
  program, e.g. after quantization-aware training, whose QDQ ops are written as they are).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConverterError, ExportError, UsageError
from edgekit.export import calibration as cal
from edgekit.export.base import (CONV_MODULE_TYPES, Artifact, BaseFormat, DeviceRuntime, TensorSpec, Written,
                                 options_with_defaults)
from edgekit.export.converter import exception_text, quiet, unsupported_op

DEFAULT_OPSET = 18
METADATA_PREFIX = "edgekit."
_OPTIONS = {
    "opset": DEFAULT_OPSET,
    "dynamic_batch": False,
    "int8_mode": "static",
    "calibration_method": "minmax",
    "calibration_percentile": 99.999,
    "activation_type": "uint8",
    "per_channel": True,
    "weight_type": "int8",  # static int8: "uint8" stores the same values +128 (x86 without VNNI saturates s8)
    "quantize_bias": False,
    "keep_io_types": True,
    "nodes_to_exclude": (),
    "float_modules": (),
    "input_names": None,
    "output_names": None,
    "weight_rounding": "gptq",  # static int8: "gptq" or "nearest" (edgekit.export.rounding, applied by the api)
    "metadata": None,  # extra key/values for metadata_props (the api adds source_sha256)
    "activation_symmetric": False,  # static int8: zero-point-0 activations (with activation_type "int8")
    "prequantized": False,  # int8: the model is a converted PT2E program (QAT), exported as it is
}
PROBE_MAX_PARAMS = 50_000_000  # converts_op's trial export: models up to this many parameters
_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}
_INT8_OPS = {
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
    "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QGemm", "QLinearAdd",
}


def resolve_options(options: dict[str, Any] | None, precision: str) -> dict[str, Any]:
    """The export options with defaults filled in; unknown names are a UsageError."""
    resolved = options_with_defaults(options, _OPTIONS, "ONNX")
    if resolved["int8_mode"] not in ("static", "dynamic"):
        raise UsageError(f"unknown int8_mode {resolved['int8_mode']!r}", "choose 'static' or 'dynamic'")
    if resolved["activation_type"] not in ("uint8", "int8"):
        raise UsageError(
            f"unknown activation_type {resolved['activation_type']!r}", "choose 'uint8' or 'int8'"
        )
    if resolved["weight_type"] not in ("int8", "uint8"):
        raise UsageError(f"unknown weight_type {resolved['weight_type']!r}", "choose 'int8' or 'uint8'")
    if resolved["activation_symmetric"] and resolved["activation_type"] != "int8":
        raise UsageError("activation_symmetric needs activation_type='int8'", "add activation_type='int8'")
    resolved["calibration_method"] = cal.check_method(resolved["calibration_method"])
    try:
        resolved["opset"] = int(resolved["opset"])
    except (TypeError, ValueError):
        raise UsageError(f"opset must be an integer, not {resolved['opset']!r}") from None
    if resolved["opset"] < 13:
        raise UsageError(f"opset {resolved['opset']} is too old", "use opset 13 or newer (per-channel QDQ needs 13)")
    return resolved


class OnnxFormat(BaseFormat):
    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "fp16", "int8")
    int8_modes = ("static", "dynamic")
    float_modules_mode = "static"
    # dynamic quantization covers MatMul/Gemm/Attention/LSTM/Gather only: convolutions stay float
    int8_float_module_types = {"dynamic": CONV_MODULE_TYPES}
    extra = None
    # tensorrt: engines built on a Jetson by JetPack's trtexec, never pip-installed (provision refuses it)
    device_runtimes = (DeviceRuntime("onnxruntime", "onnxruntime"), DeviceRuntime("tensorrt", "tensorrt", default=False))

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        out = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
        try:
            import onnxscript

            out["onnxscript"] = onnxscript.__version__
        except ImportError:  # pragma: no cover - a core dependency
            pass
        return out

    def int8_weight_grid(self, precision: str, options: dict[str, Any] | None) -> str | None:
        """"per_channel" or "per_tensor" when this export rounds weights to symmetric int8 from
        calibration (static int8), else None."""
        opts = resolve_options(options, precision)
        if precision != "int8" or opts["int8_mode"] != "static" or opts["prequantized"]:
            return None
        return "per_channel" if opts["per_channel"] else "per_tensor"

    def converts_op(self, overloads: Sequence[Any], model: Any = None, examples: Sequence[Any] | None = None) -> bool:
        """torchlib's registry, else (models up to PROBE_MAX_PARAMS) a trial export: the ONNX
        exporter also handles ops through decompositions no registry lists."""
        with contextlib.suppress(Exception):
            from torch.onnx._internal.exporter import _registration

            registry = _registration.ONNXRegistry.from_torchlib()
            if any(registry.is_registered(o) for o in overloads):
                return True
        return model is not None and examples is not None and _probe(model, examples)

    # -- export -----------------------------------------------------------------------------

    def write(self, model: Any, examples: tuple[Any, ...], precision: str, out_path: Path, calibration: Any,
              options: dict[str, Any] | None) -> Written:
        opts = resolve_options(options, precision)
        if opts["float_modules"] and not (precision == "int8" and opts["int8_mode"] == "static"):
            raise UsageError("float_modules applies to static int8 only", "drop it, or export int8 static")
        if opts["prequantized"] and precision != "int8":
            raise UsageError("prequantized applies to int8 only", "export precision='int8'")
        names = list(opts["input_names"] or cal.input_names(model, len(examples)))
        if len(names) != len(examples):
            raise UsageError(f"{len(names)} input names for {len(examples)} example inputs")
        with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
            fp32 = Path(tmp) / "model.fp32.onnx"
            n_out = torch2onnx(model, examples, fp32, names, opts)
            written = self._precision(fp32, Path(tmp), out_path, precision, examples, names, calibration, opts)
        set_metadata(out_path, self.metadata(precision, {**opts, "int8_mode": _mode(opts)}))
        written.opset = opts["opset"]

        def graph_outputs(artifact: Artifact) -> list[str]:
            if n_out != len(artifact.outputs):  # pragma: no cover - a converter surprise
                return [f"torch returned {n_out} outputs but the ONNX graph has {len(artifact.outputs)}"]
            return []

        written.more_notes = graph_outputs
        return written

    def _precision(self, fp32: Path, tmp: Path, out_path: Path, precision: str, examples: tuple[Any, ...],
                   names: list[str], calibration: Any, opts: dict[str, Any]) -> Written:
        """``out_path`` at ``precision`` from the fp32 file (the body of ``write``)."""
        converter = "torch.onnx (dynamo)" + (" + onnxruntime.quantization" if precision == "int8" else "")
        if precision == "fp32":
            _finish(fp32, out_path)
            return Written("torch.onnx (dynamo)")
        if precision == "fp16":
            _float16(fp32, out_path, keep_io_types=bool(opts["keep_io_types"]))
            notes = ["fp16 weights and compute; inputs and outputs stay float32"] if opts["keep_io_types"] else []
            return Written("torch.onnx (dynamo)", notes=notes)
        if opts["prequantized"]:
            # a converted program's name scopes name its own graph nodes ("quantize_per_tensor"),
            # not the user's modules: nothing to keep
            _finish_proto(strip_node_metadata(_load(fp32), keep=()), out_path)
            return Written("torch.onnx (dynamo) of a PT2E program", {"method": "pt2e program", "n_samples": 0},
                           ["int8 from a quantized PT2E program (QAT): its QDQ ops exported as they are"])
        if opts["int8_mode"] == "dynamic":
            _quantize_dynamic(fp32, tmp, out_path, per_channel=bool(opts["per_channel"]))
            return Written(converter, {"method": "dynamic", "n_samples": 0},
                           ["int8 dynamic: int8 weights, activations quantized at run time (MatMul/Gemm only)"])
        return _static_int8(fp32, tmp, out_path, examples, names, calibration, opts, converter)

    # -- inspect ----------------------------------------------------------------------------

    def inspect(self, path: Path) -> Artifact:
        """An Artifact for an ``.onnx`` file as it is (I/O from the graph, precision from its ops)."""
        import onnx

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # DecodeError and friends
            raise ExportError(f"{path.name} is not a readable ONNX model: {exc}") from exc
        graph = model.graph
        inits = {i.name: i for i in graph.initializer}
        consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        producers = {o: node for node in graph.node for o in node.output}
        inputs = [
            _spec(v, _io_quant(v.name, consumers.get(v.name, []), inits, "DequantizeLinear"))
            for v in graph.input
            if v.name not in inits
        ]
        outputs = [
            _spec(v, _io_quant(v.name, [producers[v.name]] if v.name in producers else [], inits, "QuantizeLinear"))
            for v in graph.output
        ]
        meta = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}
        precision = meta.get("precision") or _guess_precision(model)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        notes = []
        if any(i.data_location == onnx.TensorProto.EXTERNAL for i in graph.initializer):
            notes.append("weights are stored in external data files next to the model")
        return self.inspected(path, meta, precision, inputs, outputs, opset=opset, notes=notes)


FORMAT = OnnxFormat()


def _mode(opts: dict[str, Any]) -> str:
    return "prequantized" if opts["prequantized"] else opts["int8_mode"]


def _static_int8(fp32: Path, tmp: Path, out_path: Path, examples: tuple[Any, ...], names: list[str], calibration: Any,
                 opts: dict[str, Any], converter: str) -> Written:
    """QDQ static int8 at ``out_path`` from the fp32 file and calibration samples."""
    if calibration is None:
        raise UsageError(
            "static int8 needs calibration data",
            "pass calibration= (100-500 representative inputs), or options={'int8_mode': 'dynamic'}",
        )
    feeds = cal.to_feeds(calibration, names, "calibration data")
    cal.check_shapes(feeds, examples, names, "calibration data")
    batch = 1 if opts["dynamic_batch"] else int(examples[0].shape[0]) if examples[0].dim() else 1
    notes = []
    if opts["float_modules"]:
        kept = nodes_of_modules(fp32, list(opts["float_modules"]))
        opts["nodes_to_exclude"] = list(opts["nodes_to_exclude"] or []) + kept
        notes.append(f"mixed precision: {len(kept)} nodes of {', '.join(opts['float_modules'])} kept float")
    _quantize_static(fp32, tmp, out_path, feeds, batch, opts)
    if opts["weight_type"] == "uint8":
        _store_weights_as_uint8(out_path)
    summary = cal.summary(
        feeds,
        opts["calibration_method"],
        activation_type=opts["activation_type"],
        weight_type=opts["weight_type"],
        per_channel=bool(opts["per_channel"]),
    )
    notes.append(
        f"int8 static QDQ: int8 per-{'channel' if opts['per_channel'] else 'tensor'} weights"
        + (" stored as uint8 (+128: u8×u8 kernels, exact on every x86)" if opts["weight_type"] == "uint8" else "")
        + f", {opts['activation_type']} activations"
        + (" (symmetric, zero point 0)" if opts["activation_symmetric"] else "")
    )
    return Written(converter, summary, notes)


def _probe(model: Any, examples: Sequence[Any]) -> bool:
    """True when a trial ONNX export of ``model`` (into a temporary folder) succeeds."""
    import torch

    if sum(p.numel() for p in model.parameters()) > PROBE_MAX_PARAMS:
        return False
    with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as tmp:
        try:
            with quiet():
                torch.onnx.export(model, tuple(examples), str(Path(tmp) / "probe.onnx"), dynamo=True,
                                  external_data=False, verbose=False)
        except Exception:
            return False
    return True


# -- torch → ONNX ------------------------------------------------------------------------------


def torch2onnx(model: Any, examples: tuple[Any, ...], path: Path, names: list[str], opts: dict[str, Any]) -> int:
    """fp32 ONNX at ``path``; returns the number of outputs. Raises UnsupportedOpError/ExportError."""
    import torch

    with torch.no_grad():
        n_out = len(cal.flatten_outputs(model(*examples)))
    out_names = list(opts["output_names"] or cal.output_names(n_out))
    kwargs: dict[str, Any] = {}
    args = examples
    if opts["dynamic_batch"]:
        batch = torch.export.Dim("batch", min=1, max=65536)
        # by position: the ONNX input names need not be forward()'s argument names
        kwargs["dynamic_shapes"] = tuple({0: batch} for _ in names)
        if examples[0].shape[0] == 1:  # torch.export specializes size-1 dims: trace with 2
            args = tuple(torch.cat([e, e]) for e in examples)
    try:
        with quiet():
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=True,
                external_data=False,
                verbose=False,
                opset_version=int(opts["opset"]),
                input_names=names,
                output_names=out_names,
                **kwargs,
            )
    except Exception as exc:
        raise _export_error(exc, model, examples) from exc
    if not path.is_file():  # pragma: no cover - defensive
        raise ExportError("torch.onnx.export wrote no file")
    data = path.with_name(path.name + ".data")
    if data.exists():  # pragma: no cover - external_data=False should prevent it
        raise ExportError("the ONNX exporter wrote a side .onnx.data file", "the model may exceed 2 GB")
    return n_out


_OP_RE = re.compile(r"op='([\w.]+)', overload='(\w+)'")
_NODE_RE = re.compile(r"translating node %(\w+)")


def _export_error(exc: Exception, model: Any, examples: tuple[Any, ...]) -> ExportError:
    text = exception_text(exc)
    match = _OP_RE.search(text)
    if "No ONNX function found" in text and match:
        op = f"{match.group(1)}.{match.group(2)}" if match.group(2) != "default" else match.group(1)
        node = _NODE_RE.search(text)
        return unsupported_op("the ONNX exporter", match.group(1), op, "onnx", model, examples,
                              node.group(1) if node else None)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ConverterError(f"ONNX export failed: {first[:300]}", "run with --debug for the full exporter error")


# -- fp16 ------------------------------------------------------------------------------------


def _float16(src: Path, dst: Path, keep_io_types: bool) -> None:
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:  # pragma: no cover - ships with onnxruntime
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError as exc:
            from edgekit.errors import MissingDependencyError

            raise MissingDependencyError(
                "fp16 ONNX export needs onnxruntime's transformers tools or onnxconverter-common",
                "pip install onnxconverter-common",
            ) from exc
    model = onnx.load(str(src))
    with quiet():
        half = convert_float_to_float16(model, keep_io_types=keep_io_types, disable_shape_infer=False)
    _finish_proto(half, dst)


# -- int8 --------------------------------------------------------------------------------------


def _preprocess(src: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "model.pre.onnx"
    try:
        with quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference can fail on exotic graphs: retry without it
        with quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    return pre


class _Reader:
    """onnxruntime CalibrationDataReader over stacked samples, ``batch`` at a time."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int) -> None:
        self._chunks = [chunk for chunk, _ in cal.batches(feeds, batch, pad=True)]
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._chunks):
            return None
        self._i += 1
        return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in self._chunks[self._i - 1].items()}

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def set_range(self, start_index: int, end_index: int) -> None:  # pragma: no cover - strided mode
        self._chunks = self._chunks[start_index:end_index]
        self._i = 0


def _quantize_static(src: Path, tmp: Path, dst: Path, feeds: dict[str, np.ndarray], batch: int, opts: dict[str, Any]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    pre = _preprocess(src, tmp)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[opts["calibration_method"]]
    act = QuantType.QUInt8 if opts["activation_type"] == "uint8" else QuantType.QInt8
    out = tmp / "model.int8.onnx"
    reader = _Reader(feeds, batch)
    kwargs: dict[str, Any] = {}
    if opts["calibration_method"] != "minmax":
        # quantize_static's own entropy calibrator uses 128 bins for 128 quantized bins (so it
        # equals minmax) and its percentile one is symmetric: calibrate here with usable settings.
        kwargs["calibration_cache_path"] = _calibrate(pre, tmp, reader, method, opts)
        reader = None
    try:
        with quiet():
            quantize_static(
                str(pre),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=bool(opts["per_channel"]),
                activation_type=act,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=list(opts["nodes_to_exclude"] or []),
                extra_options={
                    "ActivationSymmetric": bool(opts["activation_symmetric"]),
                    "WeightSymmetric": True,
                    "QuantizeBias": bool(opts["quantize_bias"]),
                    "CalibMovingAverage": False,
                },
                **kwargs,
            )
    except Exception as exc:
        raise ConverterError(f"ONNX Runtime static quantization failed: {exc}") from exc
    _finish_proto(_share_zero_points(_load(out)), dst)


def _store_weights_as_uint8(path: Path) -> None:
    """Rewrite the symmetric int8 weights of a QDQ model as uint8 with zero point 128 (same values).

    x86 CPUs without VNNI compute u8×s8 products in saturating 16-bit pairs; u8×u8 kernels widen
    first and are exact. The runner does the same rewrite at load time on such hosts, so this one
    function (the runner's) defines it for both.
    """
    from edgekit.resources import runner_module

    shifted, _count = runner_module().uint8_weights(path.read_bytes())
    if shifted is None:
        raise UsageError("weight_type='uint8' needs uint8 activations (int8 ones share the weights' zero points)",
                         "drop activation_type='int8', or keep weight_type='int8'")
    path.write_bytes(shifted)


def _calibrate(pre: Path, tmp: Path, reader: _Reader, method: Any, opts: dict[str, Any]) -> Path:
    """Histogram calibration (entropy or percentile) into a calibration cache for quantize_static."""
    import inspect as _inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if "calibration_cache_path" not in _inspect.signature(quantize_static).parameters:
        raise UsageError(
            f"calibration_method {opts['calibration_method']!r} needs a newer onnxruntime",
            "upgrade onnxruntime, or use calibration_method='minmax'",
        )
    extra: dict[str, Any] = {"symmetric": bool(opts["activation_symmetric"]), "num_bins": 2048}
    if method == CalibrationMethod.Entropy:
        extra["num_quantized_bins"] = 128
    else:
        extra["percentile"] = float(opts["calibration_percentile"])
    cache = tmp / "calibration.json"
    try:
        with quiet():
            calibrator = create_calibrator(
                pre, None, augmented_model_path=str(tmp / "augmented.onnx"), calibrate_method=method, extra_options=extra
            )
            calibrator.collect_data(reader)
            save_tensors_data(calibrator.compute_data(), cache)
    except Exception as exc:
        raise ConverterError(f"ONNX Runtime {opts['calibration_method']} calibration failed: {exc}") from exc
    return cache


def _quantize_dynamic(src: Path, tmp: Path, dst: Path, per_channel: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = _preprocess(src, tmp)
    model = _gemm_to_matmul(onnx.load(str(pre)))
    mm = tmp / "model.matmul.onnx"
    onnx.save(model, str(mm))
    out = tmp / "model.int8.onnx"
    try:
        with quiet():
            quantize_dynamic(
                str(mm),
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=["MatMul", "Attention", "LSTM", "Gather"],
            )
    except Exception as exc:
        raise ConverterError(f"ONNX Runtime dynamic quantization failed: {exc}") from exc
    quantized = _load(out)
    if not any(n.op_type in _INT8_OPS for n in quantized.graph.node):
        raise ExportError(
            "dynamic int8 found nothing to quantize (it covers MatMul/Gemm/Attention/LSTM)",
            "use int8_mode='static' with calibration data for convolutional models",
        )
    _finish_proto(quantized, dst)


def nodes_of_modules(path: Path, modules: list[str]) -> list[str]:
    """Names of the ONNX nodes that come from torch modules ``modules`` (or their children): by
    their parameters' initializer names (``<module>.weight``), or by the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` metadata (a conv with a folded BatchNorm carries the BN's)."""
    import ast

    model = _load(path)
    inits = {i.name for i in model.graph.initializer}
    found: dict[str, list[str]] = {m: [] for m in modules}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = [str(s) for s in ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))]
        except (ValueError, SyntaxError):
            scopes = []
        params = [i for i in node.input if i in inits]
        for module in modules:
            prefix = module + "."
            if any(s == module or s.startswith(prefix) for s in scopes) or any(p.startswith(prefix) for p in params):
                found[module].append(node.name)
    missing = [m for m, names in found.items() if not names]
    if missing:
        raise UsageError(
            f"float_modules: no ONNX nodes come from {', '.join(missing)}",
            "name modules as in model.named_modules(), e.g. 'features.0'",
        )
    return sorted({n for names in found.values() for n in names})


def _gemm_to_matmul(model: Any) -> Any:
    """Gemm(A, B, C) with a constant B → MatMul(A, B') + Add(C), so dynamic quantization sees it."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        wname = node.input[1] + "_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), wname))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + "_mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name + "_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def _share_zero_points(model: Any) -> Any:
    """Point every all-zero zero-point initializer of one dtype/shape at a single copy."""
    from onnx import numpy_helper

    canonical: dict[tuple[int, tuple[int, ...]], str] = {}
    rename: dict[str, str] = {}
    zp_inputs = {n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2}
    for init in model.graph.initializer:
        if init.name not in zp_inputs:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size <= 1 or np.any(arr):
            continue
        key = (init.data_type, tuple(init.dims))
        if key in canonical:
            rename[init.name] = canonical[key]
        else:
            canonical[key] = init.name
    if not rename:
        return model
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    keep = [i for i in model.graph.initializer if i.name not in rename]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


# -- files and metadata ------------------------------------------------------------------------


def set_metadata(path: Path, meta: dict[str, str]) -> None:
    """Write ``edgekit.*`` entries into the model's metadata_props (replacing older ones)."""
    model = _load(path)
    keep = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = METADATA_PREFIX + key
        entry.value = str(value)
    model.producer_name = model.producer_name or "edgekit"
    _finish_proto(model, path)


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def _finish(src: Path, dst: Path) -> None:
    _finish_proto(_load(src), dst)


# The dynamo exporter records, per node, source stack traces (local paths), FX node text and
# class hierarchies: a quarter of a small model's file, and nothing a runtime reads. The name
# scopes stay: they map nodes back to torch modules (float_modules, per-op profiles).
KEPT_NODE_METADATA = ("pkg.torch.onnx.name_scopes",)


def strip_node_metadata(model: Any, keep: Sequence[str] = KEPT_NODE_METADATA) -> Any:
    """Drop per-node debug metadata and doc strings except the keys in ``keep``; returns ``model``."""
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key in keep]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
        node.doc_string = ""
    for value in model.graph.value_info:
        del value.metadata_props[:]
    return model


def _finish_proto(model: Any, dst: Path) -> None:
    import onnx

    strip_node_metadata(model)
    size = model.ByteSize()
    if size >= 2**31 - 1:
        raise ExportError(
            f"the ONNX model is {size / 2**30:.1f} GB: over protobuf's 2 GB limit for one file",
            "quantize it (int8) or split the model",
        )
    onnx.save_model(model, str(dst), save_as_external_data=False)


def _spec(value: Any, quant: dict[str, Any] | None) -> TensorSpec:
    ttype = value.type.tensor_type
    shape: list[int | str] = []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or "?")
    return TensorSpec(name=value.name, shape=shape, dtype=_ONNX_DTYPES.get(ttype.elem_type, str(ttype.elem_type)), quantization=quant)


def _io_quant(name: str, nodes: list[Any], inits: dict[str, Any], op: str) -> dict[str, Any] | None:
    """Scale/zero-point of an integer graph input (its DequantizeLinear) or output (its QuantizeLinear)."""
    from onnx import numpy_helper

    for node in nodes:
        if node.op_type != op or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if op == "DequantizeLinear" and node.input[0] != name:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else np.zeros((), np.int8)
        if scale.size != 1:
            return None
        return {"scale": float(scale.reshape(-1)[0]), "zero_point": int(zero.reshape(-1)[0]), "dtype": str(zero.dtype)}
    return None


def _guess_precision(model: Any) -> str:
    ops = {n.op_type for n in model.graph.node}
    if ops & _INT8_OPS:
        return "int8"
    float16 = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == 10)
    float32 = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == 1)
    return "fp16" if float16 > float32 else "fp32"


__all__ = ["FORMAT", "OnnxFormat", "resolve_options", "set_metadata", "strip_node_metadata", "torch2onnx"]
