"""What the format modules share around a converter: silencing it, reading its errors, and naming
where an unsupported op sits in the model and which registered formats do convert it.

The format modules import this module; it never imports them (``supported_elsewhere`` asks the
registry in ``edgekit.export`` for each format's ``converts_op``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from typing import Any, Sequence

from edgekit.errors import UnsupportedOpError

REWRITE = "rewrite that part of the model with supported ops"


@contextlib.contextmanager
def quiet():
    """Silence converters that print progress to stdout/stderr or warn about their internals."""
    sink = io.StringIO()
    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        # C++ converters and torch's log handlers write to the file descriptors, not sys.stderr
        with _captured_fds(sink), warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        if saved is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved


@contextlib.contextmanager
def _captured_fds(sink: io.StringIO):
    """Point file descriptors 1 and 2 at a temp file for the block; its text goes to ``sink``."""
    with tempfile.TemporaryFile() as captured:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(captured.fileno(), 1)
            os.dup2(captured.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            captured.seek(0)
            sink.write(captured.read().decode("utf-8", errors="replace"))


def exception_text(exc: BaseException | None) -> str:
    """The exception and its causes, one ``Type: message`` per line (converters chain them)."""
    parts = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def module_of_op(model: Any, examples: Sequence[Any], op: str, node_name: str | None = None) -> str:
    """`` in module 'features.3' (Conv2d)`` for the first node of ``op`` in the model, or ''."""
    import torch

    key = _op_key(op)
    try:
        with quiet():
            ep = torch.export.export(model, tuple(examples), strict=False)
    except Exception:
        return ""
    graphs = [ep.graph]
    with contextlib.suppress(Exception), quiet():
        graphs.append(ep.run_decompositions().graph)
    for graph in graphs:
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            if (node_name and node.name == node_name) or _op_key(str(node.target)) == key:
                stack = node.meta.get("nn_module_stack") or {}
                if not stack:
                    return ""
                path, cls = list(stack.values())[-1]
                path = path.replace("L['self'].", "").replace("L['self']", "") or "<root>"
                cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
                return f" in module '{path}' ({cls_name})"
    return ""


def _op_key(target: str) -> str:
    parts = target.split(".")
    if len(parts) >= 3 and parts[0] in ("aten", "prims", "quantized_decomposed"):
        parts = parts[1:2]
    elif len(parts) == 2 and parts[0] in ("aten", "prims"):
        parts = parts[1:]
    return parts[0].replace("_", "").lower() if parts else target


def op_overloads(op: str) -> list[Any]:
    """The torch op overloads of ``op`` ("aten.bucketize" or "bucketize"); [] when torch has none."""
    import torch

    parts = op.split(".")
    namespace, base = (parts[0], parts[1]) if len(parts) >= 2 else ("aten", parts[0])
    try:
        packet = getattr(getattr(torch.ops, namespace), base)
        return [getattr(packet, o) for o in packet.overloads()]
    except Exception:
        return []


def supported_elsewhere(op: str, exclude: str, model: Any = None, examples: Sequence[Any] | None = None) -> list[str]:
    """The registered formats other than ``exclude`` whose converter handles ``op`` (each
    format's ``converts_op``: its registry, or a trial export of ``model`` where it has none)."""
    from edgekit.export import FORMATS, get_format

    overloads = op_overloads(op)
    found = []
    for name in FORMATS:
        if name == exclude:
            continue
        with contextlib.suppress(Exception), quiet():
            if get_format(name).converts_op(overloads, model, examples):
                found.append(name)
    return found


def alternatives_hint(formats: list[str], fallback: str) -> str:
    if formats:
        return f"formats that support it: {', '.join(formats)}; or {fallback}"
    return f"no other edgekit format supports it either; {fallback}"


def unsupported_op(converter: str, op: str, shown: str, fmt: str, model: Any, examples: Sequence[Any],
                   node_name: str | None = None, trial: bool = False) -> UnsupportedOpError:
    """``<converter> cannot convert <shown> in module '...'``, hinting the formats that do convert
    ``op`` (with ``trial``, also by a trial export of ``model`` where a format has no registry)."""
    where = module_of_op(model, examples, op, node_name)
    others = supported_elsewhere(op, exclude=fmt, model=model if trial else None, examples=examples if trial else None)
    return UnsupportedOpError(f"{converter} cannot convert {shown}{where}", alternatives_hint(others, REWRITE))


__all__ = ["alternatives_hint", "exception_text", "module_of_op", "op_overloads", "quiet", "supported_elsewhere",
           "unsupported_op"]
