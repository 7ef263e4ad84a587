"""Linear int8 quantization: post-training (static, calibrated) and quantization-aware training.

``quantize(model, QuantizeConfig(...), data, example_inputs=...)`` returns a ``QuantizedModel``
and a report whose "after" figures are measured on the int8 artifacts in their own runtimes.

Every artifact is written by ``edgekit.export`` (the same formats ``edgekit export``/``deploy``
use; this module has no exporter of its own), each with its manifest:

- **PTQ**: ONNX is ONNX Runtime's static QDQ quantizer, the field tool (int8 symmetric weights
  per channel or per tensor; uint8 asymmetric or int8 symmetric activations; calibration by
  min/max, percentile or entropy); TFLite is full-integer PT2E through litert-torch (int8
  weights, int8 per-tensor activations, min/max or histogram observers).
- **QAT**: batch norms are folded into their convs, PT2E ``prepare_qat_pt2e`` inserts
  fake-quant, the model fine-tunes under it, and the converted program is exported as it is
  (the formats' ``prequantized`` option) to int8 ONNX (QDQ, dynamo exporter) and TFLite
  (litert-torch). The float model keeps the QAT-trained (folded) weights
  (``QuantizedModel.float_model``).

Nothing is flipped silently: a combination a path cannot honour (entropy calibration for TFLite,
symmetric activations in PT2E) is a RecipeError naming the field.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from edgekit.compress.config import StepConfig
from edgekit.compress.finetune import FinetuneConfig, ProgressArg, as_progress, train
from edgekit.compress.layers import forward_with_hooks
from edgekit.compress.measure import Figures, measure
from edgekit.compress.report import StepReport
from edgekit.errors import MissingDependencyError, UsageError
from edgekit.notes import detail

Format = Literal["onnx", "tflite"]


class QuantizeConfig(StepConfig):
    """How to quantize to int8.

    - ``mode``: ``ptq`` (calibrate a trained model) or ``qat`` (fine-tune under fake-quant with
      ``training``);
    - ``granularity``: weight scales ``per_channel`` (default) or ``per_tensor``; weights are
      always symmetric int8;
    - ``activations``: ``asymmetric`` (uint8 with a zero point; int8 in TFLite) or ``symmetric``
      (int8, zero point 0; ONNX PTQ only);
    - ``calibration``: ``minmax``, ``percentile`` (``percentile`` of the histogram) or ``entropy``
      (KL) for ONNX PTQ; ``minmax`` or ``histogram`` (PT2E's L2 range search) for TFLite PTQ;
      QAT learns its ranges (``minmax``);
    - ``formats``: the int8 artifacts to produce and measure (``onnx``, ``tflite``);
    - ``weight_rounding``: PTQ only, ``gptq`` (default: each layer's rounding chosen to preserve
      its outputs on the calibration data, ``edgekit.export.rounding``) or ``nearest``; QAT
      rounds to nearest, which its fake-quant training already accounts for.
    """

    precision: Literal["int8"] = "int8"
    mode: Literal["ptq", "qat"] = "ptq"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    activations: Literal["asymmetric", "symmetric"] = "asymmetric"
    calibration: Literal["minmax", "percentile", "entropy", "histogram"] = "minmax"
    percentile: float = Field(99.999, gt=50, le=100)
    calibration_samples: int = Field(256, ge=1, le=100_000)
    formats: list[Format] = Field(default_factory=lambda: ["onnx"], min_length=1)
    weight_rounding: Literal["gptq", "nearest"] = "gptq"
    training: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(epochs=2, lr=1e-4, schedule="cosine"))

    @model_validator(mode="after")
    def _check_paths(self) -> "QuantizeConfig":
        pt2e = self.mode == "qat" or "tflite" in self.formats
        if pt2e and self.activations == "symmetric":
            raise ValueError("symmetric activations are available for ONNX PTQ only; PT2E (tflite, qat) "
                             "uses per-tensor affine int8 activations")
        if self.mode == "qat" and self.calibration != "minmax":
            raise ValueError(f"calibration {self.calibration!r} applies to PTQ (QAT learns its ranges while training)")
        if "tflite" in self.formats and self.calibration not in ("minmax", "histogram"):
            raise ValueError(f"calibration {self.calibration!r} applies to ONNX PTQ only; TFLite PTQ takes minmax "
                             "or histogram (or use formats: [onnx])")
        if "onnx" in self.formats and self.calibration == "histogram":
            raise ValueError("calibration 'histogram' applies to TFLite PTQ only; ONNX takes minmax, percentile or "
                             "entropy")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats lists a format twice")
        return self


# --- PT2E compatibility -------------------------------------------------------------------------

class _FunctionModule(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


@contextlib.contextmanager
def _pt2e_compat() -> Iterator[None]:
    """Let torchao/litert-torch PT2E pattern matching run on torch 2.13.

    torchao 0.18 and litert-torch 0.10 trace their match patterns with ``torch.export.export(fn)``
    where ``fn`` is a plain function; torch 2.13 accepts only modules ("Expected `mod` to be an
    instance of `torch.nn.Module`"). Inside this block a function is wrapped in a module first.
    """
    original = torch.export.export

    def export(mod: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(mod, nn.Module) and callable(mod):
            mod = _FunctionModule(mod)
        return original(mod, *args, **kwargs)

    torch.export.export = export  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.export.export = original  # type: ignore[assignment]


def _pt2e_quantizer(config: QuantizeConfig, qat: bool) -> Any:
    try:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    except ImportError:
        raise MissingDependencyError("PT2E int8 (TFLite, QAT) needs litert-torch", "pip install 'edgekit[tflite]'",
                                     extra="tflite") from None
    return PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=config.granularity == "per_channel", is_qat=qat))


def _export_program(model: nn.Module, sample: torch.Tensor) -> Any:
    """torch.export with a dynamic batch dimension, as a GraphModule."""
    return torch.export.export(model, (sample,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)).module()


class _ExportedTrainable(nn.Module):
    """An exported (PT2E) program whose train()/eval() switch its batch-norm and dropout ops."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "_ExportedTrainable":
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        with _pt2e_compat():
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.program)
        self.training = mode
        return self


# --- batch-norm folding ------------------------------------------------------------------------

def conv_bn_pairs(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> list[tuple[str, str]]:
    """(conv, batch-norm) module names where the BN reads exactly the conv's output."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def after_conv(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (names[module], output)  # the tensor is kept alive: ids stay unique

    def before_bn(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        hit = produced.get(id(inputs[0])) if inputs else None
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], names[module]))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules()
              if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    forward_with_hooks(model, example_inputs, hooks)
    used = [c for c, _ in pairs]
    return [p for p in pairs if used.count(p[0]) == 1]  # a conv feeding two BNs cannot fold


def fold_batchnorm(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> list[tuple[str, str]]:
    """Fold every conv → BN pair into the conv (BN becomes Identity), in place; returns the pairs.

    The folded model computes the same function in eval mode; it is what runtimes execute anyway.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = conv_bn_pairs(model, example_inputs)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        model.set_submodule(conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
        model.set_submodule(bn_name, nn.Identity())
    return pairs


def apply_bn_folding_structure(model: nn.Module, pairs: Sequence[Sequence[str]]) -> nn.Module:
    """Give a fresh model the folded shape (conv with a bias, BN replaced by Identity) so a state_dict loads."""
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
        model.set_submodule(bn_name, nn.Identity())
    return model


# --- calibration data ---------------------------------------------------------------------------

def calibration_array(batches: Iterable[tuple[torch.Tensor, Any]], samples: int) -> np.ndarray:
    """The first ``samples`` inputs of ``batches`` as one float32 array."""
    parts, seen = [], 0
    for x, _ in batches:
        parts.append(x.detach().cpu().numpy().astype(np.float32))
        seen += len(x)
        if seen >= samples:
            break
    if not parts:
        raise UsageError("no calibration data", "pass data with a non-empty validation set")
    return np.concatenate(parts)[:samples]


# --- the result ---------------------------------------------------------------------------------

@dataclass
class QuantizedModel:
    """The outcome of ``quantize``: the float model, the int8 program, and how to export them.

    ``float_model`` is the float network (with QAT-trained weights after QAT); ``program`` is the
    PT2E int8 program (fake-quant arithmetic in torch) when a PT2E path ran; ``calibration`` holds
    the images ONNX PTQ calibrates on.
    """

    float_model: nn.Module
    config: QuantizeConfig
    example_inputs: tuple[torch.Tensor, ...]
    calibration: np.ndarray
    program: nn.Module | None = None
    folded: list[tuple[str, str]] = field(default_factory=list)  # (conv, bn) pairs folded before QAT
    _folded_program: nn.Module | None = field(default=None, repr=False)  # the same, int8 weights folded

    def export(self, out_dir: str | Path, name: str = "model", formats: Sequence[str] | None = None) -> dict[str, Path]:
        """Write the int8 artifacts (``{name}.int8.onnx``, ``{name}.int8.tflite``, each with its
        manifest) through ``edgekit.export``; returns them by format."""
        from edgekit.export.api import export

        paths = {}
        for fmt in formats or self.config.formats:
            qat = self.config.mode == "qat"
            model = (self._folded_program if _QAT_FOLDED.get(fmt) else self.program) if qat else self.float_model
            if qat and model is None:
                raise UsageError("no QAT program to export", "run quantize with mode: qat first")
            artifact = export(_inference_program(model) if qat else model, _examples_for(fmt, self.example_inputs),
                              format=fmt, precision="int8", calibration=None if qat else self.calibration,
                              out_dir=out_dir, name=f"{name}.int8", options=_int8_options(self.config, fmt),
                              check_parity=False)
            paths[fmt] = artifact.path
        return paths


# How compress's settings reach each export format, which names its options its own way.
# A format without a dynamic batch is exported with batch-1 examples (one sample per inference).
_DYNAMIC_BATCH = {"onnx": {"dynamic_batch": True}}
_PTQ_OPTIONS: dict[str, Callable[[QuantizeConfig], dict[str, Any]]] = {
    "onnx": lambda cfg: {"activation_type": "int8" if cfg.activations == "symmetric" else "uint8",
                         "activation_symmetric": cfg.activations == "symmetric",
                         "calibration_percentile": cfg.percentile},
}
# The QAT TFLite file keeps its tensor names, as when this module converted it itself (the
# benchmark figures stay those recorded; stripping them saves ~6 KB on the fashion CNN).
_QAT_OPTIONS = {"onnx": {"input_names": ["input"], "output_names": ["output"]}, "tflite": {"strip_names": False}}
# The QAT program each converter takes: ONNX stores the int8 weights convert_pt2e folded
# (fold_quantize=True); litert-torch folds them itself from the unfolded program.
_QAT_FOLDED = {"onnx": True, "tflite": False}


def _int8_options(config: QuantizeConfig, fmt: str) -> dict[str, Any]:
    """``config`` as ``fmt``'s int8 export options."""
    options: dict[str, Any] = {"per_channel": config.granularity == "per_channel", **_DYNAMIC_BATCH.get(fmt, {})}
    if config.mode == "qat":
        return {**options, "prequantized": True, **_QAT_OPTIONS.get(fmt, {})}
    options.update(calibration_method=config.calibration, weight_rounding=config.weight_rounding)
    return {**options, **_PTQ_OPTIONS.get(fmt, lambda _cfg: {})(config)}


def _examples_for(fmt: str, example_inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if fmt in _DYNAMIC_BATCH:
        return tuple(example_inputs)
    return tuple(t[:1] for t in example_inputs)


def _inference_program(program: nn.Module) -> nn.Module:
    """The converted program with nn.Module's eval()/train() back: torchao forbids them on
    exported programs (they would not switch in-graph ops), and ``edgekit.export`` calls eval();
    a converted program only runs inference, already in eval form."""
    for method in ("train", "eval"):
        program.__dict__.pop(method, None)
    return program


def export_fp32(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path) -> Path:
    """A float artifact at ``path`` (its format from the suffix) through ``edgekit.export``: ONNX
    with a dynamic batch dimension, TFLite with batch 1 (the torch model's input layout)."""
    from edgekit.export import format_for_file, get_format
    from edgekit.export.api import export

    path = Path(path)
    fmt = format_for_file(str(path))
    if fmt is None:
        raise UsageError(f"unknown model file type: {path}")
    export(copy.deepcopy(model).eval(), _examples_for(fmt, example_inputs), format=fmt, precision="fp32",
           out_dir=path.parent, name=path.name[: -len(get_format(fmt).suffix)], options=_DYNAMIC_BATCH.get(fmt),
           check_parity=False)
    return path


def export_onnx_fp32(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: Path) -> Path:
    """A float ONNX file with a dynamic batch dimension (``export_fp32``)."""
    return export_fp32(model, example_inputs, path)


def export_tflite_fp32(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: Path) -> Path:
    """A float .tflite, batch 1 (``export_fp32``)."""
    return export_fp32(model, example_inputs, path)


# --- artifact evaluation ------------------------------------------------------------------------

def evaluate_file(path: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy of an .onnx or .tflite file in its own runtime (``edgekit.export``'s evaluator,
    the runner's code path: int8 inputs and outputs are (de)quantized as a device would)."""
    from edgekit.export.api import inspect
    from edgekit.export.parity import evaluate_artifact

    xs, ys = [], []
    for x, y in batches:
        xs.append(x.detach().cpu().numpy().astype(np.float32))
        ys.append(y.detach().cpu().numpy())
    if not xs:
        raise UsageError("no evaluation data", "pass a non-empty validation set")
    return float(evaluate_artifact(inspect(path), np.concatenate(xs), np.concatenate(ys))["accuracy"])


# --- the step -----------------------------------------------------------------------------------

def _fp32_reference_size(model: nn.Module, example_inputs: Sequence[torch.Tensor], fmt: str, tmp: Path) -> int | None:
    """The float artifact's size in ``fmt``, for the int8/fp32 size ratio."""
    from edgekit.export import get_format

    try:
        return export_fp32(model, example_inputs, tmp / f"fp32{get_format(fmt).suffix}").stat().st_size
    except Exception:  # noqa: BLE001 - the ratio is informative; a failed float export must not fail int8
        return None


def quantize(
    model: nn.Module,
    config: QuantizeConfig | dict[str, Any] | None = None,
    data: Any = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    out_dir: str | Path | None = None,
    name: str = "model",
    progress: ProgressArg = None,
) -> tuple[QuantizedModel, StepReport]:
    """Quantize ``model`` to int8 (PTQ or QAT); measure each int8 artifact in its runtime.

    ``data`` provides calibration images (validation split) and, for QAT, training batches. With
    ``out_dir`` the artifacts stay there; otherwise they are measured in a temporary folder.
    """
    from edgekit.data.training import train_data

    cfg = QuantizeConfig.parse(config, "quantize")
    if data is None:
        raise UsageError("quantize needs data to calibrate on", "pass data (e.g. example:fashion-mnist)")
    data = train_data(data)
    show = as_progress(progress)
    start = time.perf_counter()
    if example_inputs is None:
        example_inputs = (next(iter(data.val))[0][:1],)
    example_inputs = tuple(example_inputs)
    model = model.eval()
    before = measure(model, example_inputs, data.val)
    calibration = calibration_array(data.val, cfg.calibration_samples)
    sample = torch.from_numpy(calibration[: max(2, min(4, len(calibration)))])
    result = QuantizedModel(model, cfg, example_inputs, calibration)
    details: dict[str, Any] = {}
    if cfg.mode == "qat":
        details["training"] = _run_qat(result, data, sample, show)
    if result.program is not None:
        details["program_accuracy"] = _evaluate_program(result.program, data.val)
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        where = Path(out_dir) if out_dir is not None else Path(tmp)
        show.note(f"exporting int8 {', '.join(cfg.formats)}")
        paths = result.export(where, name)
        artifacts = {}
        for fmt, path in paths.items():
            artifacts[fmt] = {"file": path.name if out_dir is not None else None, "size_bytes": path.stat().st_size,
                              "accuracy": evaluate_file(path, data.val),
                              "fp32_size_bytes": _fp32_reference_size(result.float_model, example_inputs, fmt, Path(tmp))}
            ref = artifacts[fmt]["fp32_size_bytes"]
            artifacts[fmt]["size_ratio"] = artifacts[fmt]["size_bytes"] / ref if ref else None
    details["artifacts"] = artifacts
    details["artifact_ratio"] = artifacts[cfg.formats[0]]["size_ratio"]
    first = artifacts[cfg.formats[0]]
    after = Figures(params=before.params, nonzero_params=before.nonzero_params, size_bytes=before.size_bytes,
                    gzip_bytes=before.gzip_bytes, macs=before.macs, accuracy=first["accuracy"],
                    artifact_bytes=first["size_bytes"])
    notes = [detail("after.accuracy and after.artifact_bytes are the "
                    f"{cfg.formats[0]} int8 artifact's, measured in its runtime")]
    changes = {"type": "quantize", "precision": cfg.precision, "mode": cfg.mode, "formats": list(cfg.formats),
               "folded_batchnorm": [list(p) for p in result.folded]}
    if result.folded:
        notes.append(f"QAT folded {len(result.folded)} batch-norm layer(s) into the preceding convs; the float "
                     "model keeps that folded shape (the manifest records it)")
    return result, StepReport("quantize", cfg.model_dump(), before, after, time.perf_counter() - start,
                              details=details, changes=changes, notes=notes)


def _run_qat(result: QuantizedModel, data: Any, sample: torch.Tensor, show: Any) -> list[dict[str, Any]]:
    """Fold BN into the convs, fine-tune under fake-quant (PT2E), convert; the float model keeps the weights.

    Folding first trains the weights the runtime will run (it folds BN too) and spares PT2E's
    conv-bn pattern rewriting, which costs tens of seconds per convert on torch 2.13.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    cfg = result.config
    result.folded = fold_batchnorm(result.float_model, result.example_inputs)
    quantizer = _pt2e_quantizer(cfg, qat=True)
    with _pt2e_compat():
        prepared = prepare_qat_pt2e(_export_program(copy.deepcopy(result.float_model).train(), sample), quantizer)
    trainable = _ExportedTrainable(prepared)
    history = train(trainable, data.train, data.val, cfg.training,
                    lambda x, y: nn.functional.cross_entropy(trainable(x), y), progress=show, label="QAT")
    trainable.eval()
    _copy_trained_weights(prepared, result.float_model)
    with _pt2e_compat():
        result.program = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
        result._folded_program = convert_pt2e(copy.deepcopy(prepared), fold_quantize=True)
    return history


def _copy_trained_weights(program: nn.Module, float_model: nn.Module) -> None:
    """Carry QAT-trained weights (same state names) back into the float model."""
    target = float_model.state_dict()
    trained = {k: v for k, v in program.state_dict().items() if k in target and v.shape == target[k].shape}
    float_model.load_state_dict(trained, strict=False)


@torch.no_grad()
def _evaluate_program(program: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    correct = seen = 0
    for x, y in batches:
        correct += int((program(x).argmax(1) == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


__all__ = ["QuantizeConfig", "QuantizedModel", "apply_bn_folding_structure", "calibration_array", "conv_bn_pairs",
           "fold_batchnorm", "evaluate_file", "export_onnx_fp32",
           "export_tflite_fp32", "quantize"]
