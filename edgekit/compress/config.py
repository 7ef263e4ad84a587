"""The base of every step's configuration: a strict pydantic model (unknown fields are errors).

One config object per step, no mutable defaults in signatures: ``prune(model, PruneConfig(ratio=0.8))``.
A recipe's YAML step is validated into the same classes, so the API and the recipe cannot drift.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekit.errors import RecipeError


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


__all__ = ["StepConfig", "validation_message"]
