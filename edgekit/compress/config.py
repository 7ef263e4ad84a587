"""The base of every step's configuration: a strict pydantic model (unknown fields are errors).

One config object per step, no mutable defaults in signatures: ``prune(model, PruneConfig(ratio=0.8))``.
A recipe's YAML step is validated into the same classes, so the API and the recipe cannot drift.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekit.errors import RecipeError

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class StepConfig(BaseModel):
    """Strict, immutable step configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, data: Any, where: str | None = None) -> "StepConfig":
        """Validate ``data`` (a dict or an instance) into this config, raising RecipeError on failure."""
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RecipeError(validation_message(exc, where or cls.__name__),
                              "fix the field named above (see docs/compress.md)") from None


def validation_message(exc: ValidationError, where: str) -> str:
    """``where: field: message (got value)``, for every error pydantic found, on one line."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(config)"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        text = f"{loc}: {msg}"
        if err.get("type") not in ("missing", "extra_forbidden") and "input" in err:
            value = err["input"]
            if not isinstance(value, (dict, list)):
                text += f" (got {value!r})"
        parts.append(text)
    return f"{where}: " + "; ".join(parts)


def import_ref(ref: str, what: str) -> Callable[..., Any]:
    """Import ``pkg.module:name``; a RecipeError names ``what`` the reference was for."""
    if not _REF.match(ref):
        raise RecipeError(f"{what}: {ref!r} is not a reference of the form pkg.module:name", "e.g. mypkg.losses:focal")
    module_name, attr = ref.split(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise RecipeError(f"{what}: cannot import {module_name}: {exc}", "check PYTHONPATH and the module name") from None
    except AttributeError:
        raise RecipeError(f"{what}: {module_name} has no attribute {attr!r}", "check the name after the colon") from None


__all__ = ["StepConfig", "import_ref", "validation_message"]
