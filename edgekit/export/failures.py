"""A converter's crash as one typed error: where in the model it failed, and what does convert it.

Converters fail in their own words (litert-torch's GRU annotator raises ``IndexError: list index
out of range``). ``converter_failure`` turns any such exception into a ``ConverterError`` that
names the module it failed in (from the graph nodes the failing code was handling, else from the
module classes its function names mention) and the formats and int8 modes that do convert this
model, each found by a real trial export into a temporary folder (for models up to
``TRIAL_MAX_PARAMS`` parameters; larger ones get the untried candidates).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from edgekit.errors import ConverterError

TRIAL_MAX_PARAMS = 5_000_000


def converter_failure(exc: BaseException, fmt: str, precision: str, opts: dict[str, Any], model: Any,
                      examples: Sequence[Any], calibration: Any, stage: str = "export") -> ConverterError:
    """The ConverterError for ``exc`` raised while exporting ``model`` to ``fmt``/``precision``
    (``stage`` "export"), or while running the artifact the converter wrote (``stage`` "run")."""
    original = exc.__cause__ if isinstance(exc, ConverterError) and exc.__cause__ is not None else exc
    where = failing_module(original, model)
    mode = describe(fmt, precision, opts.get("int8_mode"))
    # a format's ConverterError without a cause says it best; otherwise the converter's own words
    detail = str(exc) if isinstance(exc, ConverterError) and original is exc else _first_line(original)
    what = f"{mode} export failed" if stage == "export" else f"the {mode} model the converter wrote fails to run"
    hint = _alternatives_hint(fmt, precision, opts.get("int8_mode"), model, examples, calibration)
    return ConverterError(f"{what}{where}: {detail}", f"{hint}; --debug shows the converter's traceback")


def describe(fmt: str, precision: str, int8_mode: str | None = None) -> str:
    """"tflite int8 full" / "onnx fp32": a format, precision and int8 mode in words."""
    from edgekit.export import get_format

    if precision != "int8":
        return f"{fmt} {precision}"
    return f"{fmt} int8 {int8_mode or get_format(fmt).int8_modes[0]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# -- where it failed ---------------------------------------------------------------------------


def failing_module(exc: BaseException, model: Any) -> str:
    """`` in module 'rnn' (GRU)`` for the module the converter was handling when it raised, or ''."""
    frames = list(_frames(exc))
    for frame in reversed(frames):  # innermost first: the code that raised
        for value in list(frame.f_locals.values()):
            for node in _nodes_in(value):
                label = _stack_label(node.meta.get("nn_module_stack"))
                if label:
                    return label
    return _module_by_class_name(frames, exc, model)


def _frames(exc: BaseException) -> Iterator[Any]:
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _nodes_in(value: Any, depth: int = 0) -> Iterator[Any]:
    """torch.fx Nodes in a local variable: a node, a partition's ``.nodes``, or lists of them."""
    from torch.fx import Node

    if isinstance(value, Node):
        yield value
    elif depth < 2 and isinstance(value, (list, tuple)):
        for item in value[:64]:
            yield from _nodes_in(item, depth + 1)
    elif depth < 2 and isinstance(getattr(value, "nodes", None), list):  # SourcePartition
        yield from _nodes_in(value.nodes, depth + 1)


def _stack_label(stack: Any) -> str:
    if not stack:
        return ""
    path, cls = list(stack.values())[-1]
    path = str(path).replace("L['self'].", "").replace("L['self']", "")
    if not path:
        return ""  # the whole model: says nothing
    name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
    return f" in module '{path}' ({name})"


def _module_by_class_name(frames: list[Any], exc: BaseException, model: Any) -> str:
    """A module whose class the failing functions name (``_annotate_gru_io_only`` → GRU)."""
    words = set()
    for frame in frames:
        words.update(w for w in re.split(r"[^a-z0-9]+", frame.f_code.co_name.lower()) if w)
    words.update(w for w in re.split(r"[^a-z0-9]+", str(exc).lower()) if w)
    named = getattr(model, "named_modules", None)
    for path, module in (named() if named else []):
        cls = type(module).__name__
        if path and len(cls) >= 3 and not list(module.children()) and cls.lower() in words:
            return f" in module '{path}' ({cls})"
    return ""


# -- what does convert it ----------------------------------------------------------------------


def _candidates(fmt: str, precision: str, int8_mode: str | None, calibrated: bool) -> list[tuple[str, str, str | None]]:
    """(format, precision, int8 mode) to try instead, the other formats first."""
    from edgekit.export import FORMATS, get_format

    others = [get_format(name) for name in FORMATS if name != fmt]
    if precision != "int8":
        return [(other.name, precision, None) for other in others if precision in other.precisions]
    current = int8_mode or get_format(fmt).int8_modes[0]
    found = [(other.name, "int8", m) for other in others if "int8" in other.precisions
             for m in _usable_modes(other, calibrated)]
    return found + [(fmt, "int8", m) for m in _usable_modes(get_format(fmt), calibrated) if m != current]


def _usable_modes(fmt: Any, calibrated: bool) -> list[str]:
    """``fmt``'s int8 modes, those that quantize from calibration data only when there are some."""
    return [m for m in fmt.int8_modes if calibrated or not fmt.needs_calibration("int8", {"int8_mode": m})]


def _spelling(fmt: str, precision: str, mode: str | None, current_fmt: str) -> str:
    parts = [] if fmt == current_fmt else [f"format='{fmt}'"]
    if mode is not None:
        parts.append(f"options={{'int8_mode': '{mode}'}}")
    return " with ".join(parts)


def _alternatives_hint(fmt: str, precision: str, int8_mode: str | None, model: Any, examples: Sequence[Any],
                       calibration: Any) -> str:
    candidates = _candidates(fmt, precision, int8_mode, calibration is not None)
    if not candidates:
        return "no other format or mode to try"
    params = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
    if params > TRIAL_MAX_PARAMS:
        listed = ", ".join(f"{describe(f, p, m)} ({_spelling(f, p, m, fmt)})" for f, p, m in candidates)
        return f"not tried on a model this large ({params:,} parameters): {listed}"
    working, tried = [], set()
    for f, p, m in candidates:
        if (f, p) in tried and p == "int8" and f != fmt:
            continue  # one working int8 mode of the other format is enough
        if _converts(f, p, m, model, examples, calibration):
            working.append(f"{describe(f, p, m)} ({_spelling(f, p, m, fmt)})")
            tried.add((f, p))
    if working:
        return "these convert this model: " + ", ".join(working)
    return "no other format or int8 mode converts it either; try precision='fp32' or rewrite that module"


def _converts(fmt: str, precision: str, mode: str | None, model: Any, examples: Sequence[Any], calibration: Any) -> bool:
    """True when a real export of ``model`` to ``fmt`` succeeds (into a temporary folder) and the
    artifact runs in its runtime on the example inputs."""
    from edgekit.export import get_format
    from edgekit.export.converter import quiet
    from edgekit.export.parity import check_parity

    exporter = get_format(fmt)
    if not exporter.available():
        return False
    options = {"int8_mode": mode} if mode is not None else {}
    with tempfile.TemporaryDirectory(prefix="edgekit-trial-") as tmp:
        try:
            with quiet():
                artifact = exporter.export(model, tuple(examples), precision, Path(tmp) / f"trial{exporter.suffix}",
                                           calibration=calibration if exporter.needs_calibration(precision, options)
                                           else None, options=options)
                check_parity(model, artifact, [e.detach().cpu().numpy() for e in examples])
        except Exception:  # noqa: BLE001 - any failure means: not this one
            return False
    return True


__all__ = ["TRIAL_MAX_PARAMS", "converter_failure", "describe", "failing_module"]
