"""The search space: what one candidate is, and the recipe that makes it.

A candidate is a point in the compression edgekit already has: a structured (channel) prune
ratio from a coarse grid (global, with per-layer-group ratios where NetAdapt set them), an
optional low-rank factorization of the hidden Linear layers, a short fine-tune on the user's data
(a long one for the final candidates: ``epochs``), and the format/precision the device profile
allows. Its recipe is an ordinary ``edgekit compress`` recipe (a list of steps), so a recommended
candidate is rerun with ``edgekit compress`` or ``edgekit deploy --recipe``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

PRUNE_GRID = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75)  # coarse on purpose: each point costs a fine-tune
LOW_RANK_GRID = (None, 0.5, 0.25)  # rank ratio of the hidden Linear layers (None: not factorized)
# The long fine-tune of the final candidates (``Candidate.epochs``): the schedule the hand recipes of
# benchmarks/compression.py found best for the example's 8-epoch fine-tunes after a channel cut.
LONG_FINETUNE = {"lr": 3e-3, "schedule": "onecycle"}


@dataclass(frozen=True)
class Candidate:
    """One point of the search space (frozen: its JSON is the trial's key in the history)."""

    prune_ratio: float = 0.0
    low_rank: float | None = None
    format: str = "onnx"
    precision: str = "fp32"
    layer_ratios: tuple[tuple[str, float], ...] = ()  # (layer, ratio) cut on their own, sorted by name
    importance: str | None = None  # channel criterion (None: the space's own)
    distill: bool = False  # fine-tune by distillation from the uncompressed model instead of on labels alone
    epochs: int | None = None  # a long fine-tune of this many epochs (None: the study's short one)

    def to_dict(self) -> dict[str, Any]:
        """Its fields as the history stores them (the knobs added later appear only when set, so
        earlier studies keep their keys and their files)."""
        return _without_defaults(asdict(self), _LATER_KNOBS)

    def key(self) -> str:
        """The canonical JSON that identifies this candidate in a study's history."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def compresses(self) -> bool:
        """Whether its recipe changes the model (the fine-tune knobs matter only then)."""
        return bool(self.prune_ratio or self.layer_ratios or self.low_rank is not None)

    def describe(self) -> str:
        parts = [f"prune {self.prune_ratio:.3g}" if self.prune_ratio or self.layer_ratios else "no prune"]
        if self.layer_ratios:
            parts[0] += " (" + " ".join(f"{n.split('.')[0][:1]}{n.split('.')[1] if '.' in n else ''}:{r:g}"
                                        for n, r in self.layer_ratios) + ")"
        if self.importance and parts[0] != "no prune":
            parts[0] += f" by {self.importance}"
        if self.low_rank is not None:
            parts.append(f"low-rank {self.low_rank:g}")
        if self.distill:
            parts.append("KD fine-tune")
        if self.epochs is not None:
            parts.append(f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}")
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
        kwargs = {k: data[k] for k in ("prune_ratio", "low_rank", "format", "precision", "importance") if k in data}
        kwargs["layer_ratios"] = tuple((str(n), float(r)) for n, r in data.get("layer_ratios") or ())
        kwargs["distill"] = bool(data.get("distill", False))
        if data.get("epochs") is not None:
            kwargs["epochs"] = int(data["epochs"])
        return cls(**kwargs)


_LATER_KNOBS: dict[str, Any] = {"importance": None, "distill": False, "epochs": None}
_LATER_SPACE_KNOBS: dict[str, Any] = {"importances": [], "distill_choices": [False], "per_group": False}


def _without_defaults(data: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the knobs added later that are at their defaults: files written before
    those knobs existed keep their keys."""
    return {k: v for k, v in data.items() if k not in later or v != later[k]}


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
    importances: tuple[str, ...] = ()  # criteria searched besides ``importance`` (empty: that one only)
    distill_choices: tuple[bool, ...] = (False,)  # (False, True): search the KD fine-tune as a knob
    per_group: bool = False  # random/TPE draw every prune group's ratio on its own (else one global ratio)

    def to_dict(self) -> dict[str, Any]:
        return _without_defaults(json.loads(json.dumps(asdict(self))), _LATER_SPACE_KNOBS)

    def importance_choices(self) -> tuple[str | None, ...]:
        """A candidate's ``importance`` values (None: the space's ``importance``)."""
        return (None, *(i for i in self.importances if i != self.importance))

    def normalized(self, candidate: Candidate) -> Candidate:
        """``candidate`` without knobs its recipe would not use (a criterion with nothing pruned, a
        KD fine-tune with nothing compressed), so equal recipes get one key."""
        overrides = tuple((n, r) for n, r in candidate.layer_ratios if r != candidate.prune_ratio)
        if overrides != candidate.layer_ratios:  # a layer cut like the rest is no override
            candidate = replace(candidate, layer_ratios=overrides)
        if not (candidate.prune_ratio or candidate.layer_ratios) or candidate.importance == self.importance:
            candidate = replace(candidate, importance=None)
        if not candidate.compresses() or (self.finetune_epochs <= 0 and candidate.epochs is None):
            candidate = replace(candidate, distill=False)
        if not candidate.compresses():
            candidate = replace(candidate, epochs=None)
        return candidate

    def candidates_allowed(self, candidate: Candidate) -> bool:
        return ((candidate.format, candidate.precision) in self.exports
                and candidate.prune_ratio in self.prune_ratios
                and all(n in self.prune_groups and r in self.prune_ratios for n, r in candidate.layer_ratios)
                and candidate.low_rank in self.low_ranks
                and candidate.importance in self.importance_choices()
                and candidate.distill in self.distill_choices
                and candidate.epochs is None)  # the long fine-tune comes after the search, not in it

    def baseline(self) -> Candidate:
        """The uncompressed model at fp32 in the profile's first format: what drops and speed-ups are against."""
        fmt = self.exports[0][0]
        return Candidate(0.0, None, fmt, "fp32")

    def recipe(self, candidate: Candidate) -> list[dict[str, Any]]:
        """The ``edgekit compress`` steps that make ``candidate`` (empty: the model as it is)."""
        steps: list[dict[str, Any]] = []
        if candidate.prune_ratio or candidate.layer_ratios:
            prune: dict[str, Any] = {"structure": "channels", "ratio": candidate.prune_ratio,
                                     "importance": candidate.importance or self.importance}
            if candidate.layer_ratios:
                prune["layer_ratios"] = dict(candidate.layer_ratios)
            steps.append({"prune": prune})
        if candidate.low_rank is not None and self.low_rank_layers:
            steps.append({"low_rank": {"rank_ratio": candidate.low_rank, "layers": list(self.low_rank_layers)}})
        finetune = self._finetune(candidate) if steps else None
        if finetune is not None:
            # the KD fine-tune learns from the uncompressed model's soft labels as well as the labels
            steps.append({"distill": {"teacher": "original", "training": finetune}} if candidate.distill
                         else {"finetune": finetune})
        return steps

    def _finetune(self, candidate: Candidate) -> dict[str, Any] | None:
        """The training settings after the cut: the long fine-tune, the study's short one, or none."""
        if candidate.epochs is not None:
            finetune: dict[str, Any] = {"epochs": candidate.epochs, **LONG_FINETUNE}
        elif self.finetune_epochs > 0:
            finetune = {"epochs": self.finetune_epochs, "lr": self.finetune_lr}
        else:
            return None
        if self.finetune_batches is not None:
            finetune["max_batches"] = self.finetune_batches
        return finetune


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
