"""The search space: what one candidate is, and the recipe that makes it.

A candidate is a point in the compression edgekit already has: a structured (channel) prune
ratio from a coarse grid (global, with per-layer-group ratios where NetAdapt set them), an optional low-rank factorization of the hidden Linear layers, a short
fine-tune on the user's data, and the format/precision the device profile allows. Its recipe is
an ordinary ``edgekit compress`` recipe (a list of steps), so a recommended candidate is rerun
with ``edgekit compress`` or ``edgekit deploy --recipe``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

PRUNE_GRID = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75)  # coarse on purpose: each point costs a fine-tune
LOW_RANK_GRID = (None, 0.5, 0.25)  # rank ratio of the hidden Linear layers (None: not factorized)


@dataclass(frozen=True)
class Candidate:
    """One point of the search space (frozen: its JSON is the trial's key in the history)."""

    prune_ratio: float = 0.0
    low_rank: float | None = None
    format: str = "onnx"
    precision: str = "fp32"
    layer_ratios: tuple[tuple[str, float], ...] = ()  # (layer, ratio) cut on their own, sorted by name

    def key(self) -> str:
        """The canonical JSON that identifies this candidate in a study's history."""
        return json.dumps(asdict(self), sort_keys=True)

    def describe(self) -> str:
        parts = [f"prune {self.prune_ratio:.3g}" if self.prune_ratio or self.layer_ratios else "no prune"]
        if self.layer_ratios:
            parts[0] += " (" + " ".join(f"{n.split('.')[0][:1]}{n.split('.')[1] if '.' in n else ''}:{r:g}"
                                        for n, r in self.layer_ratios) + ")"
        if self.low_rank is not None:
            parts.append(f"low-rank {self.low_rank:g}")
        parts.append(f"{self.format}/{self.precision}")
        return ", ".join(parts)

    def with_layer_ratio(self, layer: str, ratio: float) -> "Candidate":
        ratios = dict(self.layer_ratios)
        ratios[layer] = ratio
        return replace(self, layer_ratios=tuple(sorted(ratios.items())))

    def ratio_of(self, layer: str) -> float:
        return dict(self.layer_ratios).get(layer, self.prune_ratio)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Candidate":
        kwargs = {k: data[k] for k in ("prune_ratio", "low_rank", "format", "precision") if k in data}
        kwargs["layer_ratios"] = tuple((str(n), float(r)) for n, r in data.get("layer_ratios") or ())
        return cls(**kwargs)


@dataclass(frozen=True)
class SearchSpace:
    """The grids a strategy draws from, fixed for a study (its JSON is part of the study's key)."""

    exports: tuple[tuple[str, str], ...]  # (format, precision), the profile's preference order
    prune_ratios: tuple[float, ...] = PRUNE_GRID
    low_ranks: tuple[float | None, ...] = LOW_RANK_GRID
    low_rank_layers: tuple[str, ...] = ()  # hidden Linear layers (the output layer is never factorized)
    prune_groups: tuple[str, ...] = ()  # layers NetAdapt shrinks one at a time (empty: the global ratio only)
    finetune_epochs: int = 1
    finetune_batches: int | None = None
    finetune_lr: float = 1e-3
    importance: str = "magnitude"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def candidates_allowed(self, candidate: Candidate) -> bool:
        return ((candidate.format, candidate.precision) in self.exports
                and candidate.prune_ratio in self.prune_ratios
                and candidate.low_rank in self.low_ranks)

    def baseline(self) -> Candidate:
        """The uncompressed model at fp32 in the profile's first format: what drops and speed-ups are against."""
        fmt = self.exports[0][0]
        return Candidate(0.0, None, fmt, "fp32")

    def recipe(self, candidate: Candidate) -> list[dict[str, Any]]:
        """The ``edgekit compress`` steps that make ``candidate`` (empty: the model as it is)."""
        steps: list[dict[str, Any]] = []
        if candidate.prune_ratio or candidate.layer_ratios:
            prune: dict[str, Any] = {"structure": "channels", "ratio": candidate.prune_ratio,
                                     "importance": self.importance}
            if candidate.layer_ratios:
                prune["layer_ratios"] = dict(candidate.layer_ratios)
            steps.append({"prune": prune})
        if candidate.low_rank is not None and self.low_rank_layers:
            steps.append({"low_rank": {"rank_ratio": candidate.low_rank, "layers": list(self.low_rank_layers)}})
        if steps and self.finetune_epochs > 0:
            finetune: dict[str, Any] = {"epochs": self.finetune_epochs, "lr": self.finetune_lr}
            if self.finetune_batches is not None:
                finetune["max_batches"] = self.finetune_batches
            steps.append({"finetune": finetune})
        return steps


def exports_of(preferred: Sequence[Any], available: Any) -> tuple[tuple[str, str], ...]:
    """(format, precision) pairs from a profile's preferences that this install can export, each
    format's fp32 added (int8 must win by measurement, never by assumption)."""
    pairs: list[tuple[str, str]] = []
    for pref in preferred:
        if available(pref.format, pref.precision):
            for pair in ((pref.format, pref.precision), (pref.format, "fp32")):
                if pair not in pairs and available(*pair):
                    pairs.append(pair)
    return tuple(pairs)


__all__ = ["Candidate", "LOW_RANK_GRID", "PRUNE_GRID", "SearchSpace", "exports_of"]
