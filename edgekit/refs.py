"""``pkg.module:name`` references: a model factory, a DATA factory, a loss, a distillation student.

One importer for all of them. Each caller passes the error type of its domain (``ModelError``,
``DataError``, ``RecipeError``) and, where it helps, what the reference was for, so a message
names the right thing and the CLI maps it to the right exit code.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from edgekit.errors import EdgekitError

REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_ref(text: str) -> bool:
    """True when ``text`` has the form ``pkg.module:name``."""
    return bool(REF.match(text))


def import_ref(ref: str, error: type[EdgekitError], *, what: str = "",
               attr_hint: str = "check the name after the colon", function: bool = False) -> Any:
    """The object ``name`` of ``pkg.module:name``; failures are ``error``, prefixed with ``what``.

    ``attr_hint`` is the hint when the module has no such name; ``function`` also refuses an
    object that is not callable.
    """
    prefix = f"{what}: " if what else ""
    if not is_ref(ref):
        raise error(f"{prefix}{ref!r} is not a reference of the form pkg.module:name", "e.g. mypkg.losses:focal")
    module_name, attr = ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{prefix}cannot import {module_name}: {exc}", "check PYTHONPATH and the module name") from None
    value = getattr(module, attr, None)
    if value is None:
        raise error(f"{prefix}{module_name} has no attribute {attr!r}", attr_hint)
    if function and not callable(value):
        raise error(f"{prefix}{ref} is a {type(value).__name__}, not a function", attr_hint)
    return value


__all__ = ["REF", "import_ref", "is_ref"]
