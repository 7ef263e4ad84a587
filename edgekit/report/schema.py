"""The report schema shared by ``deploy``, ``export`` and ``compress``.

Versioned with ``schema_version``; every field, its unit and meaning is documented in
docs/report-schema.md. Units are in the keys. Reports written by an older edgekit are read
through ``edgekit.report.load.load_report``, which upgrades them to this version.

History:
  1  the first release: ``DeployReport`` only.
  2  every report has a ``run_id``; ``DeployReport.op_profile`` (optional per-operator top list);
     the ``export`` and ``compress`` report kinds (``ExportReport``, ``CompressReport``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REPORT_SCHEMA_VERSION = 2


def new_run_id() -> str:
    """A fresh run id: 12 hex digits, unique enough to name a run in a local store."""
    return uuid.uuid4().hex[:12]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class ArtifactSummary(_Model):
    file: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    reference_size_bytes: int | None = None  # the fp32 export of the same model, for the ratio
    chosen_because: str = ""
    manifest: dict[str, Any] | None = None


class RuntimeSummary(_Model):
    name: str
    version: str | None = None
    providers: list[str] = []
    threads: int | None = None


class LatencySummary(_Model):
    import_ms: float | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    n: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    throughput_ips: float | None = None
    representative: bool = True  # False when measured under emulation (qemu) or on this host
    samples_ms: list[float] = []
    warmup_ms: list[float] = []


class MemorySummary(_Model):
    peak_rss_mib: float | None = None
    baseline_rss_mib: float | None = None  # after importing the runtime, before loading the model

    @property
    def model_rss_mib(self) -> float | None:
        if self.peak_rss_mib is None or self.baseline_rss_mib is None:
            return None
        return self.peak_rss_mib - self.baseline_rss_mib


class ParitySummary(_Model):
    reference: str  # "torch" or "host runtime"
    n: int
    inputs: str | None = None  # what was compared: "64 samples of images/ (...)", or seeded random inputs
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float | None = None
    tolerance: float | None = None
    passed: bool = True


class AccuracySummary(_Model):
    """The artifact's task metric on evaluation data, in the target's runtime (edgekit.metrics)."""

    dataset: str
    n: int
    accuracy: float | None = None  # classification top-1 (None for the other metrics)
    reference_accuracy: float | None = None  # the float torch model on the same samples
    where: str = "target"
    metric: str = "classification"  # classification | agreement | embedding | regression
    headline: str | None = None  # the name in ``values`` that sums the metric up ("top1", "cosine", "mse")
    values: dict[str, float] = {}  # every figure of the metric
    reference_values: dict[str, float] | None = None  # the float model's, where meaningful
    against: str | None = None  # "labels", "float model" or "targets"
    text: str | None = None  # one line: the figures, the float model's beside them


class TargetSummary(_Model):
    kind: str
    address: str
    reproduced: list[str] = []
    not_reproduced: list[str] = []


class OpProfileEntry(_Model):
    """One row of a per-operator profile: where the time of one inference goes."""

    op: str  # operator type: "Conv", "MatMul", "CONV_2D"
    name: str = ""  # node name in the graph ("" when the runtime aggregates by type)
    total_ms: float  # time spent in this op over the profiled inferences
    count: int = 1  # how many times it ran over the profiled inferences
    percent: float  # share of the total op time, 0-100


class _Report(_Model):
    """What every report kind carries (see docs/report-schema.md, "Common fields")."""

    schema_version: int = REPORT_SCHEMA_VERSION
    kind: str
    run_id: str = Field(default_factory=new_run_id)
    created_at: str = Field(default_factory=_now)
    edgekit_version: str = ""
    model: str

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)


class DeployReport(_Report):
    kind: str = "deploy"
    device: str
    profile: dict[str, Any] = {}
    target: TargetSummary
    artifact: ArtifactSummary
    runtime: RuntimeSummary
    settings: dict[str, Any] = {}
    latency: LatencySummary
    memory: MemorySummary
    parity: ParitySummary | None = None
    accuracy: AccuracySummary | None = None
    data: dict[str, Any] = {}  # calibration, evaluation and parity samples: where from, how many, the split
    device_facts: dict[str, Any] = {}
    state_before: dict[str, Any] = {}
    state_after: dict[str, Any] = {}
    warnings: list[str] = []
    notes: list[str] = []
    details: list[str] = []  # notes for --verbose only: converter internals, generic caveats
    op_profile: list[OpProfileEntry] = []  # optional: the top operators by time, largest first


class ExportReport(_Report):
    """What ``edgekit export`` measured: the artifact and how closely it matches torch."""

    kind: str = "export"
    artifact: ArtifactSummary
    settings: dict[str, Any] = {}
    parity: ParitySummary | None = None
    accuracy: AccuracySummary | None = None  # measured on this host with the exported artifact
    export_seconds: float | None = None
    warnings: list[str] = []
    notes: list[str] = []


class StepMetrics(_Model):
    """A model's measurements at one point of a compression pipeline. Unmeasured ones stay None."""

    params: int | None = None  # parameters that are stored (pruned-away structures excluded)
    nonzero_params: int | None = None  # parameters that are not zero (unstructured sparsity)
    size_bytes: int | None = None  # raw bytes of the parameters and buffers as stored
    gzip_bytes: int | None = None  # the same bytes gzip-compressed (what sparsity and clustering buy)
    artifact_bytes: int | None = None  # file size of an exported artifact, when the step produced one
    macs: int | None = None  # multiply-accumulates of one inference
    accuracy: float | None = None  # 0-1, on CompressReport.dataset
    latency_ms: float | None = None  # median latency of one inference, where CompressReport.latency_where says

    @property
    def deploy_size_bytes(self) -> int | None:
        """What ships: the artifact's size when there is one, else the raw parameter bytes."""
        return self.artifact_bytes if self.artifact_bytes is not None else self.size_bytes


class StepSummary(_Model):
    """One compression step (prune, quantize, distill, fine-tune...) with its effect."""

    name: str  # the step's verb: "magnitude_prune", "structured_prune", "quantize", "finetune"
    settings: dict[str, Any] = {}  # the step's configuration (ratio, scope, epochs...)
    before: StepMetrics = Field(default_factory=StepMetrics)
    after: StepMetrics = Field(default_factory=StepMetrics)
    seconds: float | None = None  # wall time of the step on the host
    extra: dict[str, Any] = {}  # anything step-specific (per-layer sparsity, loss curve, pruning history...)
    notes: list[str] = []  # caveats a reader must see ("unstructured sparsity is not faster on dense runtimes")


class CandidateSummary(_Model):
    """One point tried by a search (e.g. a pruning ratio), shown on the Pareto plots."""

    label: str
    metrics: StepMetrics
    chosen: bool = False
    extra: dict[str, Any] = {}


class CompressReport(_Report):
    """What ``edgekit compress`` (or ``deploy --recipe``) did to the model, step by step."""

    kind: str = "compress"
    recipe: dict[str, Any] = {}  # the recipe as run (after defaults)
    dataset: str = ""  # where accuracy was measured, e.g. "fashion-mnist test (10000 images)"
    latency_where: str = ""  # where latency_ms was measured: "host", "pi4 (emulated)", ...
    steps: list[StepSummary] = []
    candidates: list[CandidateSummary] = []  # optional: points of a search, for the Pareto plots
    artifact: ArtifactSummary | None = None  # the final exported artifact, when there is one
    settings: dict[str, Any] = {}
    warnings: list[str] = []
    notes: list[str] = []

    @property
    def baseline(self) -> StepMetrics | None:
        """The model before the first step."""
        return self.steps[0].before if self.steps else None

    @property
    def final(self) -> StepMetrics | None:
        """The model after the last step."""
        return self.steps[-1].after if self.steps else None


Report = DeployReport | ExportReport | CompressReport
REPORT_KINDS: dict[str, type[_Report]] = {"deploy": DeployReport, "export": ExportReport, "compress": CompressReport}
