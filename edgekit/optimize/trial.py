"""One trial: compress a candidate on the host, export it, measure it on the target.

A trial is an ordinary ``edgekit deploy`` with the candidate's recipe, format and precision: the
recipe runs on the host (prune, low-rank, short fine-tune on ``--data``), the model is exported
(int8 in the mode chosen by measurement), and the runner on the target times it at the profile's
threads and evaluates it, in the device runtime, on the search slice of ``--eval``. Nothing here
is estimated: every figure comes from the deploy report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from edgekit.errors import EdgekitError, UsageError
from edgekit.optimize.history import TrialRecord
from edgekit.optimize.space import Candidate, SearchSpace

@dataclass
class TrialSettings:
    """What every trial of a study shares: the model, where it runs, the data, the timing."""

    model: str
    device: str
    folder: Path
    space: SearchSpace
    data: str | None = None
    eval_data: str | None = None
    eval_limit: int | None = 1000
    emulate: bool = True
    host: str | None = None
    weights: str | None = None
    input_shape: Any = None
    threads: int | None = None
    runs: int = 100
    # Timed for at least this long: on the example (0.06 ms) 100 runs gave p50s 0.060-0.076 ms from
    # one process to the next, a 1-second loop 0.0599-0.0603 ms (TFLite benchmark_model does the same).
    min_seconds: float = 1.0
    warmup: int = 10
    metric: str | None = None
    preprocess: Any = None
    profile_files: tuple[str, ...] = ()
    ssh: Any = None
    seed: int = 0
    extra_options: dict[str, Any] = field(default_factory=dict)


def deploy_options(settings: TrialSettings, **overrides: Any) -> Any:
    """The DeployOptions every trial uses (``overrides``: the candidate's own)."""
    from edgekit.deploy import DeployOptions

    kwargs: dict[str, Any] = dict(
        emulate=settings.emulate, host=settings.host, weights=settings.weights, input_shape=settings.input_shape,
        runs=settings.runs, min_seconds=settings.min_seconds, warmup=settings.warmup, threads=settings.threads,
        eval_data=settings.eval_data,
        eval_limit=settings.eval_limit, calibration=settings.data, metric=settings.metric,
        preprocess=settings.preprocess, profile_files=settings.profile_files,
    )
    if settings.ssh is not None:
        kwargs["ssh"] = settings.ssh
    kwargs.update(settings.extra_options)
    kwargs.update(overrides)
    return DeployOptions(**kwargs)


def target_label(settings: TrialSettings, board: Any = None) -> str:
    """Which device measured a trial: a fleet board's label, the study's host, or ``emulate``."""
    if board is not None:
        return str(board.label)
    return "emulate" if settings.emulate else str(settings.host)


def board_options(settings: TrialSettings, board: Any) -> dict[str, Any]:
    """DeployOptions overrides that send a trial to one board of a fleet (``edgekit.fleet.FleetHost``):
    its address, and its own SSH options over the study's."""
    from edgekit.targets.ssh_options import SSHOptions

    return {"emulate": False, "host": board.host, "ssh": SSHOptions.coerce(settings.ssh).merged(board.ssh)}


def run_trial(settings: TrialSettings, candidate: Candidate, number: int, note: str | None = None,
              deploy: Callable[..., Any] | None = None, raise_errors: bool = False, board: Any = None) -> TrialRecord:
    """Measure ``candidate`` as trial ``number`` (on ``board`` of a fleet, else the study's target).

    A typed failure becomes a failed record and the study goes on (a device lost mid-study fails
    that trial only); ``raise_errors`` re-raises instead (the baseline: without it nothing compares).
    """
    import torch

    if deploy is None:
        from edgekit.deploy import deploy
    folder = settings.folder / "trials" / f"{number:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    steps = settings.space.recipe(candidate)
    recipe = None
    if steps:
        recipe = folder / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(steps, sort_keys=False))
    options = deploy_options(settings, format=candidate.format, precision=candidate.precision,
                             recipe=str(recipe) if recipe else None,
                             recipe_data=settings.data if recipe else None, out_dir=str(folder / "artifact"),
                             **(board_options(settings, board) if board is not None else {}))
    torch.manual_seed(settings.seed)  # the fine-tune's shuffling and augmentation: repeatable per study
    start, started = time.perf_counter(), time.time()
    try:
        report = deploy(settings.model, settings.device, options)
        record = record_from_report(report, number, candidate, settings)
    except EdgekitError as exc:
        if raise_errors:
            raise
        record = TrialRecord(number, candidate, status="failed", error=exc.one_line(),
                             extra={"error_type": type(exc).__name__})
    record.seconds = round(time.perf_counter() - start, 2)
    record.strategy_note = note
    record.extra.update(target=target_label(settings, board), started=round(started, 3), ended=round(time.time(), 3))
    return record


def record_from_report(report: Any, number: int, candidate: Candidate, settings: TrialSettings) -> TrialRecord:
    """The trial's figures from a deploy report; a report without a usable metric is a usage error."""
    value, name, samples = headline_metric(report)
    artifact = settings.folder / "trials" / f"{number:03d}" / "artifact" / report.artifact.file
    return TrialRecord(
        number=number, candidate=candidate, metric=value, metric_name=name, eval_samples=samples,
        latency_p50_ms=report.latency.p50_ms, latency_p90_ms=report.latency.p90_ms,
        size_bytes=report.artifact.size_bytes, peak_rss_mib=report.memory.peak_rss_mib,
        artifact=str(artifact.relative_to(settings.folder)), chosen_because=report.artifact.chosen_because,
        extra={"threads": report.settings.get("threads"), "runs": report.settings.get("runs"),
               "representative": report.latency.representative},
    )


def headline_metric(report: Any) -> tuple[float, str, int]:
    """(value, name, samples) of the report's task metric; only metrics where higher is better."""
    acc = report.accuracy
    if acc is None:
        raise UsageError("optimize needs evaluation data to score candidates", "pass --eval DATA")
    from edgekit.metrics import METRICS

    metric = METRICS.get(acc.metric)
    if metric is None or not metric.higher_is_better or not acc.headline:
        raise UsageError(f"optimize ranks candidates by a metric where higher is better; {acc.metric} is not one",
                         "pass --metric classification, agreement or embedding")
    return float(acc.values[acc.headline]), f"{acc.metric}:{acc.headline}", int(acc.n)


__all__ = ["TrialSettings", "board_options", "deploy_options", "headline_metric", "record_from_report", "run_trial",
           "target_label"]
