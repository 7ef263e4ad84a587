"""StepReport: what one compression step did, with before/after figures, as JSON-able data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit.compress.measure import Figures

REPORT_SCHEMA_VERSION = 1


@dataclass
class StepReport:
    """The outcome of one step (prune, quantize, distill, ...).

    ``details`` holds the technique's own numbers (per-layer sparsity, ranks, codebook sizes, the
    fine-tuning history); ``changes`` is the replayable description of any change of architecture
    (a pruning history, the ranks of factorized layers, the student's factory), never a pickled
    module; ``notes`` are caveats a reader must see (e.g. unstructured sparsity is not faster on
    dense runtimes).
    """

    kind: str
    config: dict[str, Any]
    before: Figures
    after: Figures
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    index: int | None = None  # position in a recipe

    def ratio(self, figure: str) -> float | None:
        """after / before for one figure ("params", "gzip_bytes", ...), None when not measured."""
        a, b = getattr(self.after, figure), getattr(self.before, figure)
        if a is None or not b:
            return None
        return a / b

    @property
    def accuracy_drop_pt(self) -> float | None:
        """Accuracy lost in percentage points (negative when the step gained accuracy)."""
        if self.before.accuracy is None or self.after.accuracy is None:
            return None
        return 100.0 * (self.before.accuracy - self.after.accuracy)

    def summary(self) -> str:
        """One line for humans: kind, accuracy before → after, params and size ratios."""
        parts = [self.kind if self.index is None else f"{self.index}: {self.kind}"]
        if self.before.accuracy is not None and self.after.accuracy is not None:
            parts.append(f"accuracy {100 * self.before.accuracy:.2f}% → {100 * self.after.accuracy:.2f}%")
        parts.append(f"params {self.before.params:,} → {self.after.params:,}")
        if self.after.nonzero_params != self.after.params:
            parts.append(f"non-zero {self.after.nonzero_params:,}")
        if self.after.artifact_bytes:
            text = f"artifact {self.after.artifact_bytes / 1024:.1f} KiB"
            if self.details.get("artifact_ratio"):
                text += f" ({self.details['artifact_ratio']:.2f}× of the fp32 artifact)"
            parts.append(text)
        else:
            ratio = self.after.gzip_bytes / max(self.before.gzip_bytes, 1)
            parts.append(f"gzip {self.after.gzip_bytes / 1024:.1f} KiB ({ratio:.2f}× of before)")
        return ", ".join(parts) + f" [{self.seconds:.1f} s]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "config": self.config,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "accuracy_drop_pt": self.accuracy_drop_pt,
            "seconds": round(self.seconds, 3),
            "details": self.details,
            "changes": self.changes,
            "notes": list(self.notes),
        }


__all__ = ["REPORT_SCHEMA_VERSION", "StepReport"]
