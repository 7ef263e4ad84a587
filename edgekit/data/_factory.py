"""Import a ``pkg.module:fn`` factory named by a DATA reference.

edgekit/models.py (``_resolve_factory``) does the same with its own error type; this one raises
``DataError`` (edgekit/datasets.py ``train_data`` calls ``call_factory`` itself, once, to tell a
``(train_loader, val_loader)`` pair from data).
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from edgekit.errors import DataError

FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_factory_ref(ref: str) -> bool:
    return bool(FACTORY_REF.match(ref))


def import_factory(ref: str, returns: str) -> Callable[[], Any]:
    """The callable ``fn`` of ``pkg.module:fn``; ``returns`` says what it should return, for hints."""
    module_name, fn_name = ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"cannot import {module_name}: {exc}", "check PYTHONPATH and the module name") from None
    factory = getattr(module, fn_name, None)
    if factory is None:
        raise DataError(f"{module_name} has no attribute {fn_name!r}", f"name a function returning {returns}")
    if not callable(factory):
        raise DataError(f"{ref} is a {type(factory).__name__}, not a function", f"name a function returning {returns}")
    return factory


def call_factory(ref: str, returns: str) -> Any:
    """Import and call the factory; an exception inside it becomes a DataError naming it."""
    factory = import_factory(ref, returns)
    try:
        return factory()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: report it as bad data, not an edgekit bug
        raise DataError(f"{ref}() raised {type(exc).__name__}: {' '.join(str(exc).split())}",
                        f"fix the factory; it should take no arguments and return {returns}") from exc
