"""The report schema shared by ``deploy`` (and later ``export`` and ``compress``).

Versioned with ``schema_version``; documented in docs/report-schema.md. Units are in the keys.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REPORT_SCHEMA_VERSION = 1


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
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float | None = None
    tolerance: float | None = None
    passed: bool = True


class AccuracySummary(_Model):
    dataset: str
    n: int
    accuracy: float
    reference_accuracy: float | None = None  # the float torch model on the same images
    where: str = "target"


class TargetSummary(_Model):
    kind: str
    address: str
    reproduced: list[str] = []
    not_reproduced: list[str] = []


class DeployReport(_Model):
    schema_version: int = REPORT_SCHEMA_VERSION
    kind: str = "deploy"
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    edgekit_version: str = ""
    model: str
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
    device_facts: dict[str, Any] = {}
    state_before: dict[str, Any] = {}
    state_after: dict[str, Any] = {}
    warnings: list[str] = []
    notes: list[str] = []

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)
