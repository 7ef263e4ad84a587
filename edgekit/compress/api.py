"""``edgekit compress``: run a recipe on a model and write the result as files, all or nothing.

The output folder holds

- ``model.pt``: the compressed model's ``state_dict`` (tensors only; load with ``weights_only=True``);
- ``manifest.json``: how to rebuild the architecture: the base model reference and input shape,
  then the ordered architecture changes (a student factory, a channel-pruning history, the ranks
  of factorized layers). ``load_compressed`` replays it: no pickled module, no TorchScript;
- ``report.json``: one StepReport per step, and the figures before the first and after the last;
- ``model.int8.onnx`` / ``model.int8.tflite`` when the recipe quantizes;
- ``codebooks.npz`` when it clusters (codebook + indices per layer).

Everything is written into a staging folder beside the output and moved in only when the
whole recipe succeeded, so a failure leaves no half-written output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from edgekit.compress.recipe import Recipe, load_recipe, run_recipe
from edgekit.compress.report import StepReport
from edgekit.errors import ModelError, UsageError
from edgekit.outputs import json_default, write_json_atomic, write_text_atomic

MANIFEST_SCHEMA_VERSION = 1
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
CODEBOOK_FILE = "codebooks.npz"


@dataclass
class CompressResult:
    out_dir: Path
    model: nn.Module
    steps: list[StepReport]
    manifest: dict[str, Any]
    report: Any  # edgekit.report.schema.CompressReport
    files: list[str] = field(default_factory=list)


def _resolve(model: str | nn.Module, weights: str | None, input_shape: Any) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
    if isinstance(model, nn.Module):
        if input_shape is None:
            raise UsageError("compressing a module needs its input shape", "pass input_shape=(1, 3, 224, 224)")
        from edgekit.models import parse_input_shape

        shape = parse_input_shape(input_shape)
        return model, (torch.zeros(shape),), {"ref": None, "class": type(model).__qualname__, "input_shape": list(shape)}
    from edgekit.models import resolve_model

    resolved = resolve_model(model, weights=weights, input_shape=input_shape)
    if resolved.module is None:
        raise ModelError(f"{model} is an exported file; compression works on torch models",
                         "pass example:NAME or a factory pkg.module:fn (with --weights)")
    shape = list(resolved.example_inputs[0].shape)
    return resolved.module, resolved.example_inputs, {"ref": model, "class": type(resolved.module).__qualname__,
                                                      "input_shape": shape}


def compress(
    model: str | nn.Module,
    recipe: str | Path | Recipe | list | dict,
    data: Any,
    out_dir: str | Path,
    *,
    weights: str | None = None,
    input_shape: Any = None,
    progress: Any = None,
    preprocess: Any = None,
) -> CompressResult:
    """Run ``recipe`` on MODEL with DATA and write model.pt, manifest.json and report.json to ``out_dir``.

    DATA is anything ``edgekit.data.training.train_data`` takes; it is checked against the model (input
    shape, outputs) before any step runs. An image folder is read with ``preprocess`` (an
    ``edgekit.data.Preprocess``), else with the model's own preprocessing where edgekit knows it.
    """
    import edgekit
    from edgekit.data.training import train_data_for_model

    recipe = load_recipe(recipe)  # validate before loading anything heavy
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder", "choose another -o/--out-dir")
    module, example_inputs, base = _resolve(model, weights, input_shape)
    data = train_data_for_model(data, module, example_inputs, preprocess=preprocess, model=model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        start = time.perf_counter()
        data_name = f"{data.name} (validation split)" if data.labeled else data.name
        compressed, steps = run_recipe(module, recipe, data, example_inputs=example_inputs, out_dir=staging,
                                       name="model", progress=progress)
        torch.save(compressed.state_dict(), staging / MODEL_FILE)
        if any(s.kind == "cluster" for s in steps):
            _write_codebooks(compressed, steps, staging / CODEBOOK_FILE)
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "edgekit_version": edgekit.__version__,
            "torch_version": torch.__version__,
            "base": base,
            "changes": [s.changes for s in steps if s.changes and s.changes.get("type") != "quantize"],
            "quantization": next((s.changes for s in steps if s.changes and s.changes.get("type") == "quantize"), None),
            "state_dict": MODEL_FILE,
            "state_keys": len(compressed.state_dict()),
        }
        report = _compress_report(base, recipe, data_name, steps, staging, time.perf_counter() - start)
        write_json_atomic(staging / MANIFEST_FILE, manifest)
        write_text_atomic(staging / REPORT_FILE, report.to_json() + "\n")
        files = sorted(p.name for p in staging.iterdir())
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CompressResult(out_dir, compressed, steps, manifest, report, files)


def _compress_report(base: dict[str, Any], recipe: Recipe, data_name: str, steps: Sequence[StepReport],
                     folder: Path, seconds: float) -> Any:
    """The run as an ``edgekit.report`` CompressReport (read by ``edgekit report`` and ``edgekit runs``)."""
    import edgekit
    from edgekit.export.base import sha256_file
    from edgekit.report.schema import ArtifactSummary, CompressReport, StepMetrics, StepSummary

    summaries = []
    for s in steps:
        extra = dict(s.details)
        extra.update(index=s.index, kind=s.kind, accuracy_drop_pt=s.accuracy_drop_pt)
        if s.changes:
            extra["changes"] = s.changes
        summaries.append(StepSummary(name=s.kind, settings=_non_defaults(s), before=StepMetrics(**s.before.to_dict()),
                                     after=StepMetrics(**s.after.to_dict()), seconds=round(s.seconds, 3),
                                     extra=_jsonable(extra), notes=list(s.notes)))
    artifact = None
    quant = next((s for s in steps if s.kind == "quantize"), None)
    if quant is not None:
        fmt = quant.config["formats"][0]
        info = quant.details["artifacts"][fmt]
        path = folder / info["file"]
        artifact = ArtifactSummary(file=path.name, format=fmt, precision="int8", size_bytes=info["size_bytes"],
                                   sha256=sha256_file(path), reference_size_bytes=info.get("fp32_size_bytes"),
                                   chosen_because="the recipe's quantize step")
    return CompressReport(
        edgekit_version=edgekit.__version__, model=base["ref"] or base["class"],
        recipe=recipe.to_dict() | {"source": recipe.source}, dataset=data_name,
        latency_where="not measured (edgekit deploy measures latency)", steps=summaries, artifact=artifact,
        settings={"seconds": round(seconds, 2), "input_shape": base["input_shape"]},
    )


def _non_defaults(step: StepReport) -> dict[str, Any]:
    from edgekit.compress.recipe import STEP_CONFIGS

    cls = STEP_CONFIGS.get(step.kind)
    if cls is None:
        return dict(step.config)
    defaults = {}
    for name, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        defaults[name] = default.model_dump() if hasattr(default, "model_dump") else default
    return _jsonable({k: v for k, v in step.config.items() if defaults.get(k, object()) != v})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=json_default))


def _write_codebooks(model: nn.Module, steps: Sequence[StepReport], path: Path) -> None:
    import numpy as np

    from edgekit.compress.nonlinear import codebook_arrays

    layers: list[str] = []
    for s in steps:
        if s.kind == "cluster":
            layers += [n for n in s.details.get("layers", {}) if n not in layers]
    names = dict(model.named_modules())
    np.savez(path, **codebook_arrays(model, [n for n in layers if n in names]))


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the finished files into ``out_dir`` (a rename when it does not exist yet)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private; the output is an ordinary folder
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    for item in staging.iterdir():
        os.replace(item, out_dir / item.name)
    staging.rmdir()


def load_compressed(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a compressed model from ``compress``'s output folder.

    The base model is built from the manifest's reference (``example:NAME`` or ``pkg.module:fn``)
    unless ``model`` (a freshly built, uncompressed instance) is given; the recorded architecture
    changes are replayed and ``model.pt`` is loaded.
    """
    from edgekit.compress.distill import DistillConfig, build_student
    from edgekit.compress.lowrank import apply_low_rank_structure
    from edgekit.compress.quantize import apply_bn_folding_structure
    from edgekit.compress.structured import replay_channel_pruning

    folder = Path(path)
    manifest_file = folder / MANIFEST_FILE
    if not manifest_file.is_file():
        raise UsageError(f"no {MANIFEST_FILE} in {folder}", "pass the output folder of `edgekit compress`")
    manifest = json.loads(manifest_file.read_text())
    base = manifest["base"]
    example_inputs = (torch.zeros(base["input_shape"]),)
    changes = manifest.get("changes") or []
    last_student = max((i for i, c in enumerate(changes) if c["type"] == "student"), default=None)
    if last_student is not None:
        model = build_student(DistillConfig(student=changes[last_student]["factory"],
                                            student_kwargs=changes[last_student]["kwargs"]))
        changes = changes[last_student + 1 :]
    elif model is None:
        if not base.get("ref"):
            raise UsageError("the manifest has no model reference to rebuild from",
                             f"pass model= a fresh {base.get('class', 'model')} instance")
        model, example_inputs, _ = _resolve(base["ref"], None, base["input_shape"] if not base["ref"].startswith("example:") else None)
    model.eval()
    for change in changes:
        if change["type"] == "channel_pruning":
            replay_channel_pruning(model, example_inputs, change["history"])
        elif change["type"] == "low_rank":
            apply_low_rank_structure(model, change["layers"])
    folded = (manifest.get("quantization") or {}).get("folded_batchnorm")
    if folded:  # QAT trained the BN-folded float model
        apply_bn_folding_structure(model, folded)
    state = torch.load(folder / manifest.get("state_dict", MODEL_FILE), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{folder / MODEL_FILE} does not fit the rebuilt architecture: {str(exc).splitlines()[0]}",
                         "rebuild from the base model the manifest names") from None
    return model.eval()


__all__ = ["CompressResult", "compress", "load_compressed"]
