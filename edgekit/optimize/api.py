"""``edgekit.optimize``: the most accurate model that meets a device budget, measured on the device.

The order: check budgets and options → resolve the model once (to name its Linear layers) →
the study folder (``study.json``, ``history.jsonl``: a rerun continues) → the baseline trial →
the strategy's trials until ``trials`` or ``time_budget_min`` → the Pareto front → the front, the
slice's recommendation and the baseline re-scored on the full evaluation set, which makes the
recommendation (a 1,000-sample slice ranks candidates a few tenths of a point apart by chance) →
files in ``out``.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import yaml

from edgekit.errors import EdgekitError, UsageError
from edgekit.optimize.budget import Budget, closest, drop_pt, pareto_front, recommend
from edgekit.optimize.estimator import SKIP_MARGIN, SearchEstimator, candidate_features, prediction_summary
from edgekit.optimize.history import History, TrialRecord, check_study
from edgekit.optimize.plot import front_html
from edgekit.optimize.space import PRUNE_GRID, Candidate, SearchSpace, exports_of
from edgekit.optimize.strategies import STRATEGIES, make_strategy
from edgekit.optimize.trial import (TrialSettings, board_options, deploy_options, headline_metric, run_trial,
                                   target_label)
from edgekit.outputs import write_json_atomic, write_text_atomic

RESULT_FILE = "result.json"
PARETO_FILE = "pareto.json"
RECIPE_FILE = "recipe.yaml"
PLOT_FILE = "front.html"
# A fleet's board that fails a trial with one of these is gone (not the candidate's fault): it gets no more trials.
BOARD_LOST = {"ConnectionFailedError", "AuthFailedError", "HostKeyUnknownError", "HostKeyChangedError",
              "RemoteRuntimeMissingError", "RemoteDiskFullError"}


class BudgetNotMetError(EdgekitError):
    """No trial of the study met every budget (exit 1); ``closest`` is the nearest miss."""

    def __init__(self, message: str, hint: str | None = None, closest: TrialRecord | None = None) -> None:
        super().__init__(message, hint)
        self.closest = closest


@dataclass
class FinalScore:
    """A model re-scored on the full evaluation set, in the device runtime."""

    metric: float
    eval_samples: int
    latency_p50_ms: float
    latency_p90_ms: float


@dataclass
class OptimizeResult:
    """What ``optimize`` found. ``recommended`` meets every budget; the files are in ``out``."""

    out: Path
    budget: Budget
    strategy: str
    baseline: TrialRecord
    trials: list[TrialRecord]  # this study's trials in proposal order, the baseline first
    measured: int  # trials measured by this call (the rest came from the history)
    reused: int
    front: list[TrialRecord]
    recommended: TrialRecord
    recommended_final: FinalScore
    baseline_final: FinalScore
    front_final: dict[int, FinalScore]  # trial number → its full-set score: every front point, the baseline
    long_finetuned: list[int]  # trials that were a front point's long fine-tune (``final_epochs``)
    artifact: Path
    recipe: Path
    seconds: float
    notes: list[str] = field(default_factory=list)
    estimator: dict[str, Any] = field(default_factory=dict)  # predictions before measuring vs the measurements

    @property
    def drop_pt(self) -> float:
        """Drop of the recommendation on the full evaluation set, against the baseline's."""
        return drop_pt(self.baseline_final.metric, self.recommended_final.metric)

    @property
    def speedup(self) -> float:
        return self.baseline.latency_p50_ms / self.recommended.latency_p50_ms

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "out": str(self.out), "budget": asdict(self.budget), "strategy": self.strategy,
            "baseline": self.baseline.to_dict(), "recommended": self.recommended.to_dict(),
            "recommended_final": asdict(self.recommended_final), "baseline_final": asdict(self.baseline_final),
            "drop_pt": round(self.drop_pt, 3), "speedup_p50": round(self.speedup, 3),
            "artifact": str(self.artifact), "recipe": str(self.recipe),
            "trials": len(self.trials), "measured": self.measured, "reused": self.reused,
            "front": [r.number for r in self.front],
            "front_final": {str(n): asdict(f) for n, f in sorted(self.front_final.items())},
            "long_finetuned": self.long_finetuned,
            "seconds": round(self.seconds, 1), "notes": self.notes,
            "estimator": self.estimator,
        }


def optimize(
    model: str,
    device: str,
    *,
    data: str | None = None,
    eval_data: str | None = None,
    out: str | Path,
    emulate: bool = False,
    host: str | None = None,
    hosts: str | Path | Sequence[Any] | None = None,
    ray: str | None = None,
    max_latency_ms: float | None = None,
    max_size_kb: float | None = None,
    max_drop_pt: float | None = None,
    max_memory_mib: float | None = None,
    min_speedup: float | None = None,
    trials: int = 20,
    time_budget_min: float | None = None,
    strategy: str = "netadapt",
    seed: int = 0,
    eval_limit: int | None = 1000,
    final_eval_limit: int | None = None,
    final_epochs: int = 0,
    final_top: int = 2,
    skip_predicted: bool = True,
    finetune_epochs: int = 1,
    finetune_batches: int | None = None,
    prune_ratios: Sequence[float] = PRUNE_GRID,
    prune_groups: Sequence[str] | None = None,
    importances: Sequence[str] | None = None,
    distill: bool = False,
    per_group: bool = False,
    exports: Sequence[tuple[str, str]] | None = None,
    threads: int | None = None,
    runs: int = 100,
    min_seconds: float = 1.0,
    weights: str | None = None,
    input_shape: Any = None,
    metric: str | None = None,
    preprocess: Any = None,
    profile_files: Sequence[str] = (),
    ssh: Any = None,
    progress: Callable[[str], None] | None = None,
    deploy: Callable[..., Any] | None = None,
) -> OptimizeResult:
    """Search compressions of MODEL for DEVICE; return the most accurate that meets every budget.

    Every candidate is compressed on the host, exported and measured on the target (latency at the
    profile's threads, the metric in the device runtime on ``eval_limit`` samples of ``eval_data``).
    Raises ``BudgetNotMetError`` (exit 1) naming the closest trial when none meets the budget.
    Before measuring, each candidate's p50 is predicted by a latency estimator fitted on the study's
    measured trials (``edgekit.optimize.estimator``); with a latency budget, random and TPE candidates
    predicted to miss it by more than ``SKIP_MARGIN`` are recorded as skipped instead of measured
    (``skip_predicted=False``: measure them all).
    ``final_epochs``: after the search, the ``final_top`` most accurate front points that meet every
    budget but the drop get a long fine-tune of that many epochs (NetAdapt's closing step; by KD when
    ``distill``) and are measured as trials too; ``time_budget_min`` and ``trials`` bound the search only.
    ``importances`` (channel criteria), ``distill`` (the KD fine-tune from the uncompressed model) and
    ``per_group`` (random/TPE: a ratio per layer group) widen the space.
    ``hosts`` (a fleet file or a list of hosts, instead of ``emulate``/``host``): every board measures
    one trial at a time, the boards at once.
    ``ray`` (``"auto"`` or a Ray head's ``"HOST:PORT"``, ``edgekit[distributed]``): the trials after the
    baseline run as Ray tasks, each device a Ray resource of capacity 1 (``edgekit.optimize.distributed``).
    ``deploy`` replaces ``edgekit.deploy`` (a seam for a target that fails on purpose, or stand-in boards).
    """
    # Over 80 lines only by its keyword-only signature (the CLI's flags, one per line); the body is
    # the study's order, kept in one place so a reader sees it top to bottom.
    say = progress or (lambda _m: None)
    budget = Budget(max_latency_ms, max_size_kb, max_drop_pt, max_memory_mib, min_speedup)
    _check(budget, trials, time_budget_min, strategy, emulate, host, hosts, eval_data, eval_limit, final_eval_limit)
    _check_count("final_epochs", final_epochs, 0)
    _check_count("final_top", final_top, 1)
    boards = _boards(hosts)
    from edgekit.deploy import DeployOptions, check_options

    check_options(DeployOptions(runs=runs, min_seconds=min_seconds, threads=threads))  # deploy's own checks, up front
    from edgekit.devices import get as get_profile

    profile = get_profile(device, profile_files)
    resolved = _resolve(model, weights, input_shape)
    space = _space(resolved.module, model, profile, prune_ratios, prune_groups, exports, finetune_epochs,
                   finetune_batches)
    space = replace(space, importances=_importances(importances), per_group=per_group,
                    distill_choices=(False, True) if distill else (False,))
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder", "choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    study = {"model": model, "device": device, "target": "emulate" if emulate else host or "fleet", "data": data,
             "eval": eval_data, "eval_limit": eval_limit, "weights": weights, "threads": threads, "runs": runs,
             "min_seconds": min_seconds,
             "metric": metric, "strategy": strategy, "seed": seed, "space": space.to_dict()}
    resumed = check_study(folder, study)
    settings = TrialSettings(model=model, device=device, folder=folder, space=space, data=data,
                             eval_data=eval_data, eval_limit=eval_limit, emulate=emulate, host=host,
                             weights=weights, input_shape=input_shape, threads=threads, runs=runs,
                             min_seconds=min_seconds,
                             metric=metric, preprocess=preprocess, profile_files=tuple(profile_files), ssh=ssh,
                             seed=seed)
    start = time.monotonic()
    history = History(folder)
    if resumed:
        say(f"resuming: {len(history.records)} trials in {folder / 'history.jsonl'}")
    search = _Search(settings, history, make_strategy(strategy, space, seed, budget, folder),
                     _estimators(device, resolved, space), skip_predicted, say, deploy, boards, ray)
    done, measured = search.run(budget, trials, time_budget_min, start)
    baseline = done[0]
    budget = budget.for_baseline(baseline.latency_p50_ms)
    long_runs = search.measure_each(_long_finetunes(done, budget, space, final_epochs, final_top),
                                    f"long fine-tune of a front point: {final_epochs} epoch(s)")
    measured = search.measured
    counted = sum(r.status != "skipped" for r in done)
    front = pareto_front(done)
    on_slice = recommend(done, budget, baseline.metric)
    near = closest(done, budget, baseline.metric) if on_slice is None else None
    rescored = _unique([r for r in (baseline, on_slice, near) if r is not None] + front)
    say(f"re-scoring {len(rescored)} trials (the front, the slice's choice or closest, the baseline) on the full "
        f"evaluation set")
    board = boards[0] if boards else None  # a fleet re-scores on its first board, as its baseline was measured
    finals = {r.number: _final_score(settings, folder / r.artifact, final_eval_limit, deploy, board) for r in rescored}
    best = _recommend_on_full(rescored, finals, budget, on_slice, baseline)
    title = f"edgekit optimize: {model} on {device} ({strategy})"
    write_json_atomic(folder / PARETO_FILE, _pareto(budget, baseline, front, finals))
    write_text_atomic(folder / PLOT_FILE, front_html(done, front, baseline, best, budget, title))
    if best is None:
        raise _not_met(rescored, finals, budget, baseline, counted)
    artifact, recipe = _publish(folder, best, space, settings)
    result = OptimizeResult(out=folder, budget=budget, strategy=strategy, baseline=baseline, trials=done,
                            measured=measured, reused=counted - measured, front=front, recommended=best,
                            recommended_final=finals[best.number], baseline_final=finals[baseline.number],
                            front_final=finals, long_finetuned=[r.number for r in long_runs], artifact=artifact,
                            recipe=recipe, seconds=time.monotonic() - start, notes=_notes(done, settings),
                            estimator=prediction_summary(done))
    write_json_atomic(folder / RESULT_FILE, result.to_dict())
    return result


def _check(budget: Budget, trials: int, time_budget_min: float | None, strategy: str, emulate: bool,
           host: str | None, hosts: Any, eval_data: str | None, eval_limit: int | None,
           final_eval_limit: int | None) -> None:
    """Refuse bad budgets and counts with one line, before any work."""
    budget.check()
    _check_count("trials", trials, 1)
    if time_budget_min is not None and (isinstance(time_budget_min, bool) or not time_budget_min > 0):
        raise UsageError(f"time_budget_min must be a number > 0, not {time_budget_min!r}")
    for name, value in (("eval_limit", eval_limit), ("final_eval_limit", final_eval_limit)):
        if value is not None:  # None: every sample
            _check_count(name, value, 1)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}", f"choose one of {', '.join(STRATEGIES)}")
    if sum((bool(emulate), bool(host), hosts is not None)) != 1:
        raise UsageError("choose where to measure: --emulate, --host [user@]addr[:port] or --hosts fleet.yaml",
                         "pass exactly one of them")
    if not eval_data:
        raise UsageError("optimize selects candidates on held-out data", "pass --eval DATA")


def _check_count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{name} must be an integer >= {least}, not {value!r}")


def _long_finetunes(done: Sequence[TrialRecord], budget: Budget, space: SearchSpace, epochs: int,
                    top: int) -> list[Candidate]:
    """The ``top`` most accurate compressed front points that meet every budget but the drop, each with
    the long fine-tune (a fine-tune changes the metric, not the shape; by KD when the study offers it)."""
    if not epochs:
        return []
    shape_budget = replace(budget, max_drop_pt=None)
    eligible = [r for r in pareto_front(done) if r.candidate.compresses() and r.candidate.epochs is None
                and not shape_budget.violations(r, None)]
    eligible.sort(key=lambda r: (-r.metric, r.latency_p50_ms))
    kd = True in space.distill_choices
    return [space.normalized(replace(r.candidate, epochs=epochs, distill=kd or r.candidate.distill))
            for r in eligible[:top]]


def _resolve(model: str, weights: str | None, input_shape: Any) -> Any:
    """The torch model a study compresses (an exported file is refused: there is nothing to prune)."""
    from edgekit.models import resolve_model

    resolved = resolve_model(model, weights=weights, input_shape=input_shape)
    if resolved.module is None:
        raise UsageError(f"{model} is an exported file; optimize compresses torch models",
                         "pass example:NAME or a factory pkg.module:fn (with --weights)")
    return resolved


def _boards(hosts: str | Path | Sequence[Any] | None) -> list[Any]:
    """A fleet's boards (``edgekit.fleet.FleetHost``) from a fleet file or a list; none without one."""
    if hosts is None:
        return []
    from edgekit.fleet import check_unique, as_fleet_hosts, load_fleet

    boards = load_fleet(hosts)[0] if isinstance(hosts, (str, Path)) else as_fleet_hosts(hosts)
    if not boards:
        raise UsageError("a fleet needs at least one host", "list the boards in the fleet file")
    check_unique(boards)
    return boards


def _estimators(device: str, resolved: Any, space: SearchSpace) -> Callable[[str], SearchEstimator]:
    """A fresh estimator for one device (a board's label, or the study's target), shaping candidates
    from the study's model."""

    def shape(candidate: Candidate) -> dict[str, float]:
        return candidate_features(resolved.module, resolved.example_inputs, space.recipe(candidate))

    return lambda label: SearchEstimator(f"{device}@{label}", shape)


def _importances(names: Sequence[str] | None) -> tuple[str, ...]:
    """The channel criteria a study searches (empty: the space's default only)."""
    if not names:
        return ()
    from typing import get_args

    from edgekit.compress.prune import PruneConfig

    known = get_args(PruneConfig.model_fields["importance"].annotation)  # the criteria compress has
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown channel criteria {unknown}", f"choose among {', '.join(known)} for --importances")
    return tuple(dict.fromkeys(names))


def _space(module: Any, model: str, profile: Any, prune_ratios: Sequence[float],
           prune_groups: Sequence[str] | None, exports: Sequence[tuple[str, str]] | None, finetune_epochs: int,
           finetune_batches: int | None) -> SearchSpace:
    """The study's grids: the profile's exports this install has, the model's hidden Linear layers and
    its layer groups (every conv and Linear layer but the output, unless ``prune_groups`` names them)."""
    import torch

    from edgekit.export import get_format

    def available(fmt: str, precision: str) -> bool:
        exporter = get_format(fmt)
        return precision in exporter.precisions and exporter.available()

    pairs = tuple((str(f), str(p)) for f, p in exports) if exports else exports_of(profile.preferred, available)
    for fmt, precision in pairs if exports else ():
        if not available(fmt, precision):
            raise UsageError(f"{fmt}/{precision} cannot be exported by this install",
                             "choose formats/precisions the exporter supports (`edgekit export --help`)")
    if not pairs:
        raise UsageError(f"none of {profile.name}'s preferred formats can be exported here",
                         "install the missing extra (edgekit[tflite]) or choose others with --exports")
    ratios = tuple(sorted({0.0, *(float(r) for r in prune_ratios)}))
    if any(not 0 <= r < 1 for r in ratios):
        raise UsageError(f"prune ratios must be in [0, 1), not {list(prune_ratios)}")
    modules = dict(module.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
    layers = [n for n, m in modules.items() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]
    if prune_groups is not None:
        unknown = [g for g in prune_groups if g not in layers]
        if unknown:
            raise UsageError(f"prune groups {unknown} are not prunable layers of {model}",
                             f"choose among {', '.join(layers)}")
        layers = list(prune_groups)
    return SearchSpace(exports=pairs, prune_ratios=ratios, low_rank_layers=tuple(linears[:-1]),
                       prune_groups=tuple(layers), finetune_epochs=finetune_epochs, finetune_batches=finetune_batches)


class _Search:
    """The trials in proposal order: from the history where done, else predicted, then measured or
    (random/TPE past a latency budget by the estimator's margin) skipped.

    With a fleet (``boards``) every board measures one trial at a time and the boards work at once:
    the host prepares candidates in turn (``prepare_lock``) while the boards run the earlier ones; a
    strategy that answers None while trials are in flight is asked again when one finishes. Each
    board is its own device for the estimator. With ``ray`` the trials after the baseline are Ray
    tasks instead of threads (``edgekit.optimize.distributed.RayPool``), also with one target.
    """

    def __init__(self, settings: TrialSettings, history: History, strategy: Any,
                 estimator: Callable[[str], SearchEstimator], skip_predicted: bool, say: Callable[[str], None],
                 deploy: Callable[..., Any] | None, boards: Sequence[Any] = (), ray: str | None = None) -> None:
        self.settings, self.history, self.strategy = settings, history, strategy
        self.ray = ray
        self.skip_predicted = skip_predicted and getattr(strategy, "skips_by_estimate", False)
        self.say, self.deploy = say, deploy
        self.boards: list[Any] = list(boards) or [None]  # None: the study's one target
        self.estimators = {target_label(settings, b): estimator(target_label(settings, b)) for b in self.boards}
        self._fitted_on = dict.fromkeys(self.estimators, -1)  # len(done) at each estimator's last fit
        self.done: list[TrialRecord] = []
        self.measured = 0
        self._number = history.next_number()
        self._lock = threading.Lock()

    def run(self, budget: Budget, trials: int, time_budget_min: float | None,
            start: float) -> tuple[list[TrialRecord], int]:
        """``(trials in proposal order, how many this call measured)``; skipped ones do not count as trials."""
        free = list(self.boards)
        running: dict[Future[TrialRecord], _Pending] = {}
        with self._pool() as pool:  # Ray connects before the baseline: a missing device resource costs no trial
            self._baseline(budget)
            while True:
                while free and self._counted() + len(running) < trials and not self._out_of_time(
                        time_budget_min, start):
                    if not self._hand_out(pool, free, running):
                        break
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._collect(running.pop(future), future.result(), free)
        if not free:
            self.say(f"every board was lost after {self._counted()} trials")
        elif self._out_of_time(time_budget_min, start):
            self.say(f"time budget of {time_budget_min:g} min spent after {self._counted()} trials")
        elif self._counted() < trials:
            self.say(f"{self.strategy.name} has nothing left to propose after {self._counted()} trials")
        return self.done, self.measured

    def measure_each(self, candidates: Sequence[Candidate], note: str) -> list[TrialRecord]:
        """Each candidate measured here on the first board, one after the other (or found in the history),
        and added to the study's trials."""
        records = []
        for candidate in candidates:
            # its shape met the budget: never skipped on a prediction
            record = self._measured_here(self._lookup(candidate, note, self.boards[0], may_skip=False))
            self.done.append(record)
            records.append(record)
        return records

    def _baseline(self, budget: Budget) -> None:
        """The model as it is, measured here on the first board (or found in the history); the
        strategy's budget from its p50."""
        found = self._lookup(self.settings.space.baseline(), "baseline: the model as it is, fp32", self.boards[0],
                             first=True)
        baseline = self._measured_here(found)
        self.done.append(baseline)
        if not baseline.ok:
            raise UsageError(f"the baseline trial failed: {baseline.error}", "fix the error above and rerun")
        self.strategy.budget = budget.for_baseline(baseline.latency_p50_ms)  # a speed-up budget is a p50 limit now

    def _pool(self) -> "_TrialPool":
        """Where trials run: threads of this process, or Ray tasks with ``ray``."""
        if self.ray is None:
            return _ThreadPool(len(self.boards))
        from edgekit.optimize.distributed import RayPool

        return RayPool(self.ray, self.settings, [target_label(self.settings, b) for b in self.boards], self.deploy,
                       self.say)

    def _hand_out(self, pool: "_TrialPool", free: list[Any],
                  running: dict[Future[TrialRecord], "_Pending"]) -> bool:
        """Ask the strategy for a candidate and give it to the first free board (one target: measure it
        here, so Ctrl-C stops it at once; with Ray it is a task too). False when the strategy has nothing
        to propose now."""
        proposal = self.strategy.propose([*self.done, *(p.placeholder() for p in running.values())])
        if proposal is None:
            return False
        found = self._lookup(*proposal, free[0])
        if isinstance(found, _Pending) and len(self.boards) == 1 and self.ray is None:
            self.done.append(self._finish(found, found.run()))
        elif isinstance(found, _Pending):
            running[pool.submit(found)] = found
            free.remove(found.board)
        else:
            self.done.append(found)
        return True

    def _collect(self, pending: "_Pending", record: TrialRecord, free: list[Any]) -> None:
        """A board's finished trial into the history; the board back in ``free`` unless it is lost."""
        self.done.append(self._finish(pending, record))
        if len(self.boards) > 1 and record.extra.get("error_type") in BOARD_LOST:
            self.say(f"board {target_label(self.settings, pending.board)} lost ({record.error}); going on without it")
        else:
            free.append(pending.board)

    def _counted(self) -> int:
        return sum(r.status != "skipped" for r in self.done)

    @staticmethod
    def _out_of_time(time_budget_min: float | None, start: float) -> bool:
        return time_budget_min is not None and time.monotonic() - start > time_budget_min * 60

    def _lookup(self, candidate: Candidate, note: str, board: Any, first: bool = False,
                may_skip: bool = True) -> "TrialRecord | _Pending":
        """The history's record, a new skipped record (``may_skip``: on the estimator's prediction), or a
        trial to measure on ``board``."""
        record = self.history.find(candidate)
        if record is not None and record.status != "skipped":
            return record
        label = target_label(self.settings, board)
        predicted = self._predict(candidate, label)
        limit = self.strategy.budget.max_latency_ms if not first and may_skip else None
        if self.skip_predicted and SearchEstimator.misses(predicted, limit):
            if record is not None:  # skipped before, and still predicted past the budget
                return record
            record = TrialRecord(self._take_number(), candidate, status="skipped", strategy_note=note,
                                 error=f"predicted p50 {predicted:.3g} ms > {limit:.3g} ms by over "
                                       f"{SKIP_MARGIN:.0%}: not measured",
                                 extra={"predicted_p50_ms": round(predicted, 6), "target": label})
            self.say(f"trial {record.number}: {candidate.describe()} skipped ({record.error})")
            self.history.append(record)
            return record
        number = self._take_number()
        where = f" on {label}" if len(self.boards) > 1 else ""
        self.say(f"trial {number}: {candidate.describe()} ({note}){where}")
        deploy = self.deploy or functools.partial(_real_deploy(), prepare_lock=self._lock)
        return _Pending(number, candidate, note, board, predicted, lambda: run_trial(
            self.settings, candidate, number, note, deploy=deploy, raise_errors=first, board=board))

    def _measured_here(self, found: "TrialRecord | _Pending") -> TrialRecord:
        """A record found in the history as it is; a pending trial run here, in this thread, and recorded."""
        return self._finish(found, found.run()) if isinstance(found, _Pending) else found

    def _finish(self, pending: "_Pending", record: TrialRecord) -> TrialRecord:
        if pending.predicted is not None:
            record.extra["predicted_p50_ms"] = round(pending.predicted, 6)
        self.history.append(record)
        self.measured += 1
        self.say(f"  → trial {record.number}: {_brief(record)}")
        return record

    def _take_number(self) -> int:
        self._number += 1
        return self._number - 1

    def _predict(self, candidate: Candidate, label: str) -> float | None:
        """The p50 predicted on device ``label`` by an estimator fitted on that device's trials so far."""
        estimator = self.estimators[label]
        try:
            if self._fitted_on[label] != len(self.done):
                first_label = next(iter(self.estimators))
                estimator.refit([r for r in self.done if r.extra.get("target", first_label) == label])
                self._fitted_on[label] = len(self.done)
            return estimator.predict(candidate)
        except EdgekitError:
            return None  # a shape the estimator cannot compute: measure it


@dataclass
class _Pending:
    """A trial handed to a board: what it will measure and how (``run`` returns its record)."""

    number: int
    candidate: Candidate
    note: str
    board: Any
    predicted: float | None
    run: Callable[[], TrialRecord]

    def placeholder(self) -> TrialRecord:
        """What strategies see while it runs: a candidate taken, with no figures yet."""
        return TrialRecord(self.number, self.candidate, status="pending", strategy_note=self.note)


class _TrialPool(Protocol):
    """Runs handed-out trials: ``_ThreadPool`` or ``edgekit.optimize.distributed.RayPool``."""

    def __enter__(self) -> "_TrialPool": ...

    def __exit__(self, *exc: Any) -> Any: ...

    def submit(self, pending: _Pending) -> Future[TrialRecord]: ...


class _ThreadPool:
    """The default: each board's trials in a thread of this process (host work under ``prepare_lock``)."""

    def __init__(self, boards: int) -> None:
        self._threads = ThreadPoolExecutor(max_workers=boards, thread_name_prefix="edgekit-trial")

    def __enter__(self) -> "_ThreadPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._threads.shutdown(wait=True)  # Ctrl-C waits for the boards' trials, as it always did

    def submit(self, pending: _Pending) -> Future[TrialRecord]:
        return self._threads.submit(pending.run)


def _real_deploy() -> Callable[..., Any]:
    from edgekit.deploy import deploy

    return deploy


def _final_score(settings: TrialSettings, artifact: Path, limit: int | None,
                 deploy: Callable[..., Any] | None, board: Any = None) -> FinalScore:
    """The artifact deployed as is, evaluated on the full evaluation set (or ``limit`` samples)."""
    if deploy is None:
        from edgekit.deploy import deploy
    options = deploy_options(settings, eval_limit=limit, calibration=None,
                             **(board_options(settings, board) if board is not None else {}))
    report = deploy(str(artifact), settings.device, options)
    value, _name, samples = headline_metric(report)
    return FinalScore(value, samples, report.latency.p50_ms, report.latency.p90_ms)


def _unique(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    seen: dict[int, TrialRecord] = {}
    for r in records:
        seen.setdefault(r.number, r)
    return list(seen.values())


def _recommend_on_full(rescored: Sequence[TrialRecord], finals: dict[int, FinalScore], budget: Budget,
                       on_slice: TrialRecord | None, baseline: TrialRecord) -> TrialRecord | None:
    """The most accurate re-scored trial meeting every budget with its full-set metric (the drop against the
    baseline's full-set metric); else the slice's choice (its full-set drop then shows the miss), if any."""
    chosen = recommend(_on_full_set(rescored, finals), budget, finals[baseline.number].metric)
    return next(r for r in rescored if r.number == chosen.number) if chosen else on_slice


def _on_full_set(rescored: Sequence[TrialRecord], finals: dict[int, FinalScore]) -> list[TrialRecord]:
    """The re-scored trials with their full-set metric in place of the slice's."""
    return [replace(r, metric=finals[r.number].metric) for r in rescored]


def _not_met(rescored: Sequence[TrialRecord], finals: dict[int, FinalScore], budget: Budget,
             baseline: TrialRecord, counted: int) -> BudgetNotMetError:
    """No trial met every budget on the search slice, nor on the full set: the closest by its full-set figures."""
    base_metric, samples = finals[baseline.number].metric, finals[baseline.number].eval_samples
    near = closest(_on_full_set(rescored, finals), budget, base_metric)
    assert near is not None  # the baseline is among them, and measured (a failed baseline stops the study)
    missed = "; ".join(budget.violations(near, base_metric))
    record = next(r for r in rescored if r.number == near.number)
    return BudgetNotMetError(f"no candidate met {budget.describe()} in {counted} trials; closest: trial {near.number} "
                             f"({near.candidate.describe()}: {missed}, on {samples:,} evaluation samples)",
                             "raise a budget, or run more --trials (the study resumes from its history)", record)


def _pareto(budget: Budget, baseline: TrialRecord, front: Sequence[TrialRecord],
            finals: dict[int, FinalScore]) -> dict[str, Any]:
    return {"budget": budget.describe(), "baseline": baseline.number,
            "front": [_row(r, baseline, finals.get(r.number), finals.get(baseline.number)) for r in front]}


def _publish(folder: Path, best: TrialRecord, space: SearchSpace, settings: TrialSettings) -> tuple[Path, Path]:
    """Copy the recommended artifact (and its manifest) to ``out`` and write its recipe."""
    src = folder / best.artifact
    dest = folder / f"recommended{''.join(src.suffixes[-1:])}"
    shutil.copyfile(src, dest)
    manifest = src.with_name(src.name + ".manifest.json")
    if manifest.is_file():
        shutil.copyfile(manifest, dest.with_name(dest.name + ".manifest.json"))
    c = best.candidate
    header = (f"# edgekit optimize: trial {best.number} ({c.describe()}), recommended for {settings.device}\n"
              f"# rerun: edgekit compress {settings.model} --recipe {RECIPE_FILE} --data {settings.data or 'DATA'} -o out/\n"
              f"# then export {c.format}/{c.precision}: edgekit deploy {settings.model} --device {settings.device} "
              f"--recipe {RECIPE_FILE} --data {settings.data or 'DATA'} --format {c.format} --precision {c.precision}\n")
    steps = space.recipe(c)
    body = yaml.safe_dump({"name": f"optimize-trial-{best.number}", "steps": steps}, sort_keys=False)
    recipe = write_text_atomic(folder / RECIPE_FILE, header + body)
    return dest, recipe


def _row(r: TrialRecord, baseline: TrialRecord, final: FinalScore | None = None,
         baseline_final: FinalScore | None = None) -> dict[str, Any]:
    row = {"trial": r.number, "candidate": json.loads(r.candidate.key()), "metric": r.metric,
           "drop_pt": round(drop_pt(baseline.metric, r.metric), 3), "latency_p50_ms": r.latency_p50_ms,
           "latency_p90_ms": r.latency_p90_ms, "size_bytes": r.size_bytes,
           "speedup_p50": round(baseline.latency_p50_ms / r.latency_p50_ms, 3), "artifact": r.artifact}
    if final is not None and baseline_final is not None:
        row.update(metric_full=final.metric, drop_pt_full=round(drop_pt(baseline_final.metric, final.metric), 3),
                   eval_samples_full=final.eval_samples)
    return row


def _brief(r: TrialRecord) -> str:
    if not r.ok:
        return f"failed: {r.error}"
    return (f"{r.metric * 100:.2f} % · p50 {r.latency_p50_ms:.4g} ms · {r.size_bytes / 1000:.1f} KB "
            f"[{r.seconds:.0f} s]")


def _notes(done: Sequence[TrialRecord], settings: TrialSettings) -> list[str]:
    notes = []
    failed = [r for r in done if r.status == "failed"]
    if failed:
        notes.append(f"{len(failed)} trial(s) failed and were skipped: " + "; ".join(
            f"{r.number}: {r.error}" for r in failed[:3]))
    if settings.emulate:
        notes.append("latency measured on this host under the profile's limits (--emulate), not on the device")
    return notes


def format_front(result: OptimizeResult) -> str:
    """The Pareto front as a text table, the recommendation marked; ``full`` is the full-set metric."""
    base = result.baseline
    width = max([34, *(len(r.candidate.describe()) for r in result.front)])  # the knobs lengthen descriptions
    lines = [f"{'':2}{'trial':>5}  {'candidate':<{width}} {'metric':>8} {'drop':>7} {'full':>8} {'p50 ms':>9} "
             f"{'p90 ms':>9} {'KB':>7} {'speed-up':>8}"]
    for r in result.front:
        mark = "★" if r.number == result.recommended.number else " "
        final = result.front_final.get(r.number)
        full = f"{final.metric * 100:>7.2f}%" if final else f"{'':>8}"
        lines.append(f"{mark:2}{r.number:>5}  {r.candidate.describe():<{width}} {r.metric * 100:>7.2f}% "
                     f"{drop_pt(base.metric, r.metric):>+6.2f}pt {full} {r.latency_p50_ms:>9.4f} "
                     f"{r.latency_p90_ms:>9.4f} {r.size_bytes / 1000:>7.1f} "
                     f"{base.latency_p50_ms / r.latency_p50_ms:>7.2f}×")
    return "\n".join(lines)


__all__ = ["BudgetNotMetError", "FinalScore", "OptimizeResult", "format_front", "optimize"]
