"""``export()``: a torch model to one device file, checked against torch and described in a manifest.

The order is fixed: validate the request → convert into a temporary name beside the target →
rename (nothing half-written ever carries the final name) → hash, versions, calibration summary →
parity against torch in the artifact's own runtime (the runner's code path) → optional accuracy →
manifest (``<file>.manifest.json``, written atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConverterError, EdgekitError, ExportError, ParityError, UsageError
from edgekit.export import calibration as cal
from edgekit.export.base import MANIFEST_SUFFIX, Artifact, edgekit_version
from edgekit.export.base import base_versions as versions
from edgekit.export.converter import quiet
from edgekit.notes import detail

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def choose(format: str, precision: str) -> Any:  # noqa: A002 - mirrors the public keyword
    """The Format object for ``format`` after checking it can export ``precision`` here.

    Raises UsageError (unknown format), UnsupportedPrecisionError (naming the supported ones;
    nothing is flipped silently) and MissingDependencyError (naming the pip extra).
    """
    from edgekit.export import get_format

    fmt = get_format(format)
    fmt.require(precision)
    return fmt


def export(
    model: Any,
    example_inputs: Any,
    format: str = "onnx",  # noqa: A002 - the documented keyword
    precision: str = "fp32",
    calibration: Any = None,
    out_dir: str | Path = ".",
    name: str | None = None,
    options: dict[str, Any] | None = None,
    check_parity: bool = True,
    parity_inputs: Any = None,
    strict: bool = False,
    eval_data: Any = None,
    calibration_source: str | None = None,
) -> Artifact:
    """Export ``model`` to ``out_dir/<name><suffix>`` and return its Artifact (manifest written).

    ``calibration``: representative inputs for static int8 (an array for one input, a dict by
    input name, or a list in forward() order; samples stacked on axis 0). ``parity_inputs``: the
    same shapes, compared torch vs artifact (default: ``eval_data`` x, else calibration samples,
    else the example inputs plus seeded random ones). ``strict``: a parity failure raises
    ParityError (the artifact and manifest are kept for inspection). ``eval_data``: ``(x, y)``
    arrays; the artifact's own accuracy in its runtime is recorded under ``parity["accuracy"]``.
    ``calibration_source``: what the calibration samples are, recorded as ``calibration["data"]``.
    """
    import torch

    fmt = choose(format, precision)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    from edgekit.outputs import check_output_dir, missing_folders, remove_folders

    examples = cal.as_tuple(example_inputs)
    model = model.eval()
    name = name or _default_name(model, precision)
    if not _NAME_RE.match(name) or "/" in name:
        raise UsageError(f"bad artifact name {name!r}", "use letters, digits, '.', '_', '+' or '-'")
    # Every input is checked before the first file is written: a refused export leaves nothing behind.
    out_dir = check_output_dir(out_dir, "out_dir")
    if eval_data is not None:
        _xy(eval_data)
    if calibration is not None:
        check_calibration(calibration, model, examples, (options or {}).get("input_names"))
    elif fmt.needs_calibration(precision, options):  # static / full-integer int8
        from edgekit.export.failures import describe

        raise UsageError(f"{describe(fmt.name, precision, (options or {}).get('int8_mode'))} needs calibration data",
                         "pass calibration= (100-500 representative inputs), or options={'int8_mode': 'dynamic'}")
    final = out_dir / f"{name}{fmt.suffix}"
    created = missing_folders(out_dir)
    written: list[Path] = []
    try:
        artifact = _export_checked(fmt, model, examples, precision, calibration, dict(options or {}), final,
                                   written, check_parity, parity_inputs, eval_data)
        if calibration_source and (artifact.calibration or {}).get("n_samples"):
            artifact.calibration = {**artifact.calibration, "data": calibration_source}
            artifact.write_manifest()
    except BaseException:
        for path in written:  # this call's file, half-described: an older one was replaced already
            path.unlink(missing_ok=True)
            path.with_name(path.name + MANIFEST_SUFFIX).unlink(missing_ok=True)
        remove_folders(created)
        raise
    if strict and artifact.parity is not None and not artifact.parity.get("passed", True):
        p = artifact.parity
        raise ParityError(
            f"parity failed: max|Δ| {p['max_abs_diff']:.3g} > tolerance {p['tolerance']:.3g}",
            f"the artifact is kept at {final} for inspection; rerun without strict to accept it",
        )
    return artifact


def _export_checked(fmt: Any, model: Any, examples: tuple[Any, ...], precision: str, calibration: Any,
                    opts: dict[str, Any], final: Path, written: list[Path], check_parity: bool,
                    parity_inputs: Any, eval_data: Any) -> Artifact:
    """Convert into ``final`` (appended to ``written`` once it exists), then parity, accuracy and
    the manifest (the body of ``export``)."""
    source = source_sha256(model)
    opts["metadata"] = {**(opts.get("metadata") or {}), "source_sha256": source}
    started = time.perf_counter()
    artifact, rounding = _convert(fmt, model, examples, precision, calibration, opts, final)
    written.append(final)
    artifact.path = final
    if rounding is not None:
        artifact.calibration = {**(artifact.calibration or {}), "weight_rounding": rounding}
        if rounding["method"] == "gptq" and rounding.get("layers"):
            ratio = rounding.get("output_error_vs_nearest")
            artifact.notes.append(detail(
                f"int8 weights rounded by GPTQ on {rounding['samples']} calibration samples ({rounding['layers']} layers"
                + (f"; layer output error {ratio:.2f}× that of round-to-nearest)" if ratio is not None else ")")
            ))
    artifact.export_seconds = time.perf_counter() - started  # rounding included
    # An older manifest describes an older file: replace it now, refine it below.
    artifact.write_manifest()
    if check_parity:
        inputs, source_kind = _parity_inputs(parity_inputs, eval_data, calibration, examples, model)
        _record_parity(artifact, model, inputs, source_kind, (fmt.name, precision, opts, examples, calibration))
    if eval_data is not None:
        _record_accuracy(artifact, model, eval_data, examples)
    artifact.write_manifest()
    return artifact


def _convert(fmt: Any, model: Any, examples: tuple[Any, ...], precision: str, calibration: Any,
             opts: dict[str, Any], final: Path) -> tuple[Artifact, dict[str, Any] | None]:
    """The format's export into a temporary name beside ``final``, renamed once complete; a
    converter's crash becomes a ConverterError naming the module and what does convert it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{fmt.suffix}")
    try:
        with quiet():  # converters (and models run for GPTQ) log to the file descriptors and warn
            export_model, rounding = _round_weights(fmt, model, examples, precision, calibration, opts)
            artifact = fmt.export(export_model, examples, precision, partial, calibration=calibration, options=opts)
        if not partial.is_file():
            raise ExportError(f"the {fmt.name} exporter wrote no file")
        os.replace(partial, final)
    except Exception as exc:
        _remove_leftovers(partial)
        if _is_converter_crash(exc):
            from edgekit.export.failures import converter_failure

            raise converter_failure(exc, fmt.name, precision, opts, model, examples, calibration) from exc
        raise
    except BaseException:
        _remove_leftovers(partial)
        raise
    return artifact, rounding


def _record_parity(artifact: Artifact, model: Any, inputs: Any, source_kind: str, request: tuple[Any, ...]) -> None:
    """Parity against torch into ``artifact.parity``; a runtime that cannot run what the converter
    wrote is the converter's failure (``request``: format, precision, options, examples, calibration)."""
    from edgekit.export.parity import check_parity

    try:
        with quiet():  # the runtimes announce their delegates on stderr
            result = check_parity(model, artifact, inputs)
    except Exception as exc:
        if not _is_converter_crash(exc):
            raise
        from edgekit.export.failures import converter_failure

        fmt, precision, opts, examples, calibration = request
        raise converter_failure(exc, fmt, precision, opts, model, examples, calibration, stage="run") from exc
    result["inputs"] = source_kind
    artifact.parity = result
    if not result["passed"]:
        artifact.notes.append(result.get("warning") or "parity failed")
        warnings.warn(result.get("warning") or "parity failed", stacklevel=4)  # the caller of export()


def _record_accuracy(artifact: Artifact, model: Any, eval_data: Any, examples: tuple[Any, ...]) -> None:
    from edgekit.export.parity import evaluate_artifact, evaluate_torch

    x, y = _xy(eval_data)
    acc = evaluate_artifact(artifact, x, y)
    ref = evaluate_torch(model, x, y, examples)
    acc["reference_accuracy"] = ref["accuracy"]
    acc["drop_pt"] = 100.0 * (ref["accuracy"] - acc["accuracy"])
    artifact.parity = {**(artifact.parity or {}), "accuracy": acc}


def _is_converter_crash(exc: Exception) -> bool:
    """A converter's own exception (or a format's generic wrapping of one), not a diagnosed error."""
    if isinstance(exc, MemoryError):
        return False
    return isinstance(exc, ConverterError) or not isinstance(exc, EdgekitError)


def check_calibration(calibration: Any, model: Any, examples: tuple[Any, ...], names: Sequence[str] | None = None) -> None:
    """Calibration samples must match the model's inputs in number, shape and kind of dtype."""
    names = list(names or cal.input_names(model, len(examples)))
    feeds = cal.to_feeds(calibration, names, "calibration data")
    cal.check_shapes(feeds, examples, names, "calibration data")
    if cal.sample_count(feeds) == 0:
        raise UsageError("calibration data hold no samples", "pass 100-500 representative inputs")
    for name, example in zip(names, examples):
        want = example.detach().cpu().numpy().dtype
        got = np.asarray(feeds[name]).dtype
        if got.kind != want.kind and not (got.kind in "iu" and want.kind in "iu"):
            raise UsageError(f"calibration data for input {name!r} are {got} but the model takes {want}",
                             f"save the samples as {want} arrays")


WEIGHT_ROUNDING = ("gptq", "nearest")


def _round_weights(
    fmt: Any, model: Any, examples: tuple[Any, ...], precision: str, calibration: Any, opts: dict[str, Any]
) -> tuple[Any, dict[str, Any] | None]:
    """The model the format converts, and what the manifest records about weight rounding.

    Where the format quantizes weights to symmetric int8 from calibration data, ``gptq`` (the
    default) rounds them first (edgekit.export.rounding); ``nearest`` leaves it to the converter.
    """
    method = opts.get("weight_rounding", "gptq")
    if method not in WEIGHT_ROUNDING:
        raise UsageError(f"unknown weight_rounding {method!r}", f"choose one of: {', '.join(WEIGHT_ROUNDING)}")
    grid = fmt.int8_weight_grid(precision, opts)
    if grid is None or calibration is None:
        return model, None
    if method == "nearest":
        return model, {"method": "nearest", "grid": grid}
    from edgekit.export.rounding import gptq_round

    rounded, summary = gptq_round(
        model, examples, calibration, per_channel=grid == "per_channel",
        skip_modules=list(opts.get("float_modules") or ()), names=opts.get("input_names"),
    )
    return rounded, {**summary.to_dict(), "grid": grid}


def inspect(path: str | Path) -> Artifact:
    """An Artifact for a model file deployed as is (its format from the suffix)."""
    from edgekit.export import format_for_file, get_format, suffixes

    fmt_name = format_for_file(str(path))
    if fmt_name is None:
        raise UsageError(f"unknown model file type: {path}", f"known suffixes: {', '.join(suffixes())}")
    return get_format(fmt_name).inspect(Path(path))


# -- what the manifest records -----------------------------------------------------------------


def source_sha256(model: Any) -> str:
    """sha256 over the state_dict: each entry's name, dtype, shape and raw bytes, in order."""
    import torch

    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(str(tensor.dtype).encode())
            digest.update(str(tuple(tensor.shape)).encode())
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.view(torch.int16)
            digest.update(tensor.numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _default_name(model: Any, precision: str) -> str:
    return f"{type(model).__name__.lower()}-{precision}"


def _remove_leftovers(partial: Path) -> None:
    for path in (partial, partial.with_name(partial.name + ".data")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _xy(eval_data: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(eval_data, "x") and hasattr(eval_data, "y"):
        return np.asarray(eval_data.x), np.asarray(eval_data.y)
    try:
        x, y = eval_data
    except (TypeError, ValueError):
        raise UsageError("eval_data must be (x, y) arrays") from None
    return x, np.asarray(y)


def _parity_inputs(parity_inputs: Any, eval_data: Any, calibration: Any, examples: tuple[Any, ...], model: Any) -> tuple[Any, str]:
    if parity_inputs is not None:
        return parity_inputs, "given"
    if eval_data is not None and len(examples) == 1:
        x, _ = _xy(eval_data)
        return x[:64], "eval data"
    if calibration is not None:
        names = cal.input_names(model, len(examples))
        feeds = cal.to_feeds(calibration, names, "calibration data")
        return {n: v[:32] for n, v in feeds.items()}, "calibration samples"
    rng = np.random.default_rng(0)
    arrays = []
    for e in examples:
        base = e.detach().cpu().numpy()
        if base.dtype.kind == "f":
            extra = rng.standard_normal((7, *base.shape[1:])).astype(base.dtype)
            arrays.append(np.concatenate([base, extra]))
        else:
            arrays.append(base)
    return arrays, "example inputs + seeded random samples"


__all__ = ["choose", "edgekit_version", "export", "inspect", "quiet", "source_sha256", "versions"]
