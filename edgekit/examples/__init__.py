"""Bundled example models, addressed as ``example:NAME``."""

from __future__ import annotations

from edgekit.examples.registry import EXAMPLES, Example, get_example

__all__ = ["EXAMPLES", "Example", "get_example"]
