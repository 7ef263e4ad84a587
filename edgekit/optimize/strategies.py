"""How the next candidate is chosen: random (the control), NetAdapt (measured, deterministic), TPE.

A strategy is asked for one candidate at a time with every trial of the study so far (in the
order they were proposed, the baseline first) and answers ``(candidate, note)`` or None when it
has nothing left to propose. Strategies are deterministic given their seed and the results, so a
resumed study proposes the same candidates again and finds them in the history.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from edgekit.errors import MissingDependencyError, UsageError
from edgekit.optimize.budget import Budget, drop_pt
from edgekit.optimize.history import TrialRecord
from edgekit.optimize.space import Candidate, SearchSpace

Proposal = "tuple[Candidate, str] | None"
STRATEGIES = ("random", "netadapt", "tpe")
OPTUNA_FILE = "optuna.db"  # TPE's study in the study folder (Optuna's RDB storage, SQLite)


class RandomSearch:
    """Uniform draws over the grids, never repeating a candidate: the control the others must beat."""

    name = "random"
    skips_by_estimate = True  # a draw predicted far past the latency budget is not worth a measurement

    def __init__(self, space: SearchSpace, seed: int, budget: Budget, folder: Path | None = None) -> None:
        self.space = space
        self.budget = budget
        self.rng = random.Random(seed)

    def propose(self, done: Sequence[TrialRecord]) -> Proposal:
        seen = {r.candidate.key() for r in done}
        for _ in range(500):
            fmt, precision = self.rng.choice(self.space.exports)
            low_ranks = self.space.low_ranks if self.space.low_rank_layers else (None,)
            c = Candidate(self._global_ratio(), self.rng.choice(low_ranks), fmt, precision)
            c = self.space.normalized(replace(c, **self._group_ratios(), **self._fine_knobs()))
            if c.key() not in seen:
                return c, "random draw"
        return None

    def _global_ratio(self) -> float:
        return 0.0 if self.space.per_group else self.rng.choice(self.space.prune_ratios)

    def _group_ratios(self) -> dict[str, Any]:
        if not self.space.per_group:
            return {}
        ratios = self.space.prune_ratios
        return {"layer_ratios": tuple((g, self.rng.choice(ratios)) for g in sorted(self.space.prune_groups))}

    def _fine_knobs(self) -> dict[str, Any]:
        """The criterion and KD draws, only where the space has a choice (a study without these knobs
        draws the same sequence as before they existed)."""
        knobs: dict[str, Any] = {}
        if len(self.space.importance_choices()) > 1:
            knobs["importance"] = self.rng.choice(self.space.importance_choices())
        if len(self.space.distill_choices) > 1:
            knobs["distill"] = self.rng.choice(self.space.distill_choices)
        return knobs


class NetAdapt:
    """NetAdapt (Yang et al., ECCV 2018) over edgekit's grids, against latency measured on the target.

    Each step sets a latency target (the current model's measured p50 × (1 − ``reduction``)),
    proposes one shrink per knob from the current model (each layer group's next prune ratio, every
    group's next ratio at once — the big step while per-group steps are small —, the next low-rank rank,
    each int8 export of the profile), measures each (every candidate's recipe has the short
    fine-tune), and keeps the most accurate proposal that meets the target; if none does, the
    fastest proposal faster than the current model. An export measured no faster than the model
    it was proposed for is not proposed again (int8 on an x86 host without VNNI). It stops when the
    latency budget is met or no proposal is faster.
    """

    name = "netadapt"
    skips_by_estimate = False  # every proposal of a step is measured: that is the method

    def __init__(self, space: SearchSpace, seed: int, budget: Budget, folder: Path | None = None,
                 reduction: float = 0.2) -> None:
        self.space = space
        self.budget = budget
        self.reduction = reduction

    def _neighbours(self, c: Candidate, retired: set[tuple[str, str]]) -> list[Candidate]:
        # one criterion and one fine-tune for every step (the first listed; KD when offered): NetAdapt
        # spends its measurements on shapes, not on knobs that change no latency
        knobs = {"importance": (self.space.importances or (None,))[0], "distill": max(self.space.distill_choices)}
        return [self.space.normalized(replace(n, **knobs)) for n in self._shrinks(c, retired)]

    def _shrinks(self, c: Candidate, retired: set[tuple[str, str]]) -> list[Candidate]:
        out = []
        ratios = self.space.prune_ratios
        for layer in self.space.prune_groups:  # one shrink per layer group: the group's next prune ratio
            bigger = [r for r in ratios if r > c.ratio_of(layer)]
            if bigger:
                out.append(c.with_layer_ratio(layer, bigger[0]))
        uniform = self._uniform_shrink(c)
        if uniform is not None:
            out.append(uniform)
        ranks = self.space.low_ranks
        if self.space.low_rank_layers and c.low_rank in ranks and ranks.index(c.low_rank) + 1 < len(ranks):
            out.append(replace(c, low_rank=ranks[ranks.index(c.low_rank) + 1]))
        for fmt, precision in self.space.exports:
            if (fmt, precision) != (c.format, c.precision) and precision != "fp32" and (fmt, precision) not in retired:
                out.append(replace(c, format=fmt, precision=precision))
        return out

    def _uniform_shrink(self, c: Candidate) -> Candidate | None:
        """The big step while per-group steps are small: every layer group one grid step deeper than
        its own ratio (a per-layer cut; a global-scope ratio ranks channels across layers and may cut
        the cheap ones only: on the example, global 25 % measured no faster). Without groups, the next
        global ratio."""
        ratios = self.space.prune_ratios
        if not self.space.prune_groups:
            bigger = [r for r in ratios if r > c.prune_ratio]
            if not bigger:
                return None
            deeper = tuple((n, r) for n, r in c.layer_ratios if r > bigger[0])
            return replace(c, prune_ratio=bigger[0], layer_ratios=deeper)
        stepped = {g: next((r for r in ratios if r > c.ratio_of(g)), c.ratio_of(g)) for g in self.space.prune_groups}
        if all(r == c.ratio_of(g) for g, r in stepped.items()):
            return None
        return replace(c, layer_ratios=tuple(sorted({**dict(c.layer_ratios), **stepped}.items())))

    def propose(self, done: Sequence[TrialRecord]) -> Proposal:
        """Replay the steps from ``done`` (so a resumed study takes the same path), then go on."""
        by_key = {r.candidate.key(): r for r in done}
        current = done[0]
        retired: set[tuple[str, str]] = set()  # exports measured no faster than the model they were proposed for
        step = 1
        while True:
            if not current.ok:
                return None
            if self.budget.max_latency_ms is not None and current.latency_p50_ms <= self.budget.max_latency_ms:
                return None
            target = current.latency_p50_ms * (1 - self.reduction)
            proposals = self._neighbours(current.candidate, retired)
            for c in proposals:
                if c.key() not in by_key:
                    return c, f"netadapt step {step}: target p50 ≤ {target:.3g} ms from {current.candidate.describe()}"
            for c in proposals:
                r = by_key[c.key()]
                switched = (c.format, c.precision) != (current.candidate.format, current.candidate.precision)
                if switched and (not r.ok or r.latency_p50_ms >= current.latency_p50_ms):
                    retired.add((c.format, c.precision))  # it did not pay on this target: stop spending trials on it
            measured = [by_key[c.key()] for c in proposals if by_key[c.key()].ok]
            meeting = [r for r in measured if r.latency_p50_ms <= target]
            if meeting:
                current = max(meeting, key=lambda r: (r.metric, -r.latency_p50_ms))
            else:
                faster = [r for r in measured if r.latency_p50_ms < current.latency_p50_ms]
                if not faster:
                    return None
                current = min(faster, key=lambda r: r.latency_p50_ms)
            step += 1


class TPESearch:
    """Optuna's multi-objective TPE (metric up, p50 down) with the budgets as constraints.

    With a study folder the Optuna study is stored there (``optuna.db``, Optuna's RDB storage on
    SQLite) and a rerun loads it: each measured trial is added once, tagged with its candidate's key,
    so Optuna's own tools (``optuna-dashboard sqlite:///optuna.db``) see the whole study. The
    history file stays the source of the figures: trials it has and the database lacks (a deleted
    ``optuna.db``, a kill between the two writes) are added on the next proposal.
    """

    name = "tpe"
    skips_by_estimate = True

    def __init__(self, space: SearchSpace, seed: int, budget: Budget, folder: Path | None = None) -> None:
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.space = space
        self.budget = budget
        self.exports = [f"{f}/{p}" for f, p in space.exports]
        low_ranks = list(space.low_ranks) if space.low_rank_layers else [None]
        self.distributions = {
            "prune_ratio": optuna.distributions.CategoricalDistribution(list(space.prune_ratios)),
            "low_rank": optuna.distributions.CategoricalDistribution(low_ranks),
            "export": optuna.distributions.CategoricalDistribution(self.exports),
        }
        if space.per_group:  # one ratio per prune group instead of the global ratio
            del self.distributions["prune_ratio"]
            for group in space.prune_groups:
                self.distributions[f"ratio:{group}"] = optuna.distributions.CategoricalDistribution(
                    list(space.prune_ratios))
        # the criterion and KD knobs only where the space offers a choice (earlier studies load unchanged)
        if len(space.importance_choices()) > 1:
            self.distributions["importance"] = optuna.distributions.CategoricalDistribution(
                list(space.importance_choices()))
        if len(space.distill_choices) > 1:
            self.distributions["distill"] = optuna.distributions.CategoricalDistribution(list(space.distill_choices))
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)
        storage = f"sqlite:///{Path(folder).resolve() / OPTUNA_FILE}" if folder is not None else None
        self.study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler, storage=storage,
                                         study_name="edgekit", load_if_exists=True)
        self.told: set[str] = {t.user_attrs["edgekit_key"] for t in self.study.get_trials(deepcopy=False)
                               if "edgekit_key" in t.user_attrs}
        self.fallback = RandomSearch(space, seed, budget)  # when TPE keeps asking for measured points
        self.baseline_metric: float | None = None

    def _constraints(self, r: TrialRecord) -> list[float]:
        b = self.budget
        return [r.latency_p50_ms - b.max_latency_ms if b.max_latency_ms is not None else -1.0,
                r.size_bytes / 1000 - b.max_size_kb if b.max_size_kb is not None else -1.0,
                (drop_pt(self.baseline_metric, r.metric) - b.max_drop_pt
                 if b.max_drop_pt is not None and self.baseline_metric is not None else -1.0),
                ((r.peak_rss_mib or 0.0) - b.max_memory_mib if b.max_memory_mib is not None else -1.0)]

    def _add(self, r: TrialRecord) -> None:
        c = r.candidate
        export = f"{c.format}/{c.precision}"
        if not self.space.candidates_allowed(c) or (c.layer_ratios and not self.space.per_group) or (
                self.space.per_group and c.prune_ratio):
            return  # not a point of TPE's space (per-layer ratios only with per_group, else the global ratio only)
        params = {"prune_ratio": c.prune_ratio, "low_rank": c.low_rank, "export": export}
        params.update({k: getattr(c, k) for k in ("importance", "distill") if k in self.distributions})
        if self.space.per_group:
            del params["prune_ratio"]
            params.update({f"ratio:{g}": c.ratio_of(g) for g in self.space.prune_groups})
        attrs = {"edgekit_key": c.key(), "edgekit_trial": r.number, "edgekit_status": r.status}
        if r.ok:
            trial = self.optuna.trial.create_trial(params=params, distributions=self.distributions,
                                                   values=[r.metric, r.latency_p50_ms], user_attrs=attrs,
                                                   constraints=dict(zip(("latency", "size", "drop", "memory"),
                                                                        self._constraints(r))))
        else:  # failed, or skipped on the estimator's prediction: a point TPE should not ask for again
            trial = self.optuna.trial.create_trial(params=params, distributions=self.distributions, user_attrs=attrs,
                                                   state=self.optuna.trial.TrialState.FAIL)
        self.study.add_trial(trial)

    def propose(self, done: Sequence[TrialRecord]) -> Proposal:
        if self.baseline_metric is None and done and done[0].ok:
            self.baseline_metric = done[0].metric
        for r in done:
            # a fleet's running trial (status pending) is told once it has figures, not as a failure now
            if r.status != "pending" and r.candidate.key() not in self.told:
                self.told.add(r.candidate.key())
                self._add(r)
        seen = {r.candidate.key() for r in done}
        for _ in range(20):
            trial = self.study.ask(self.distributions)
            fmt, precision = trial.params["export"].split("/")
            groups = tuple((g, trial.params[f"ratio:{g}"]) for g in sorted(self.space.prune_groups)
                           if f"ratio:{g}" in trial.params)
            c = Candidate(trial.params.get("prune_ratio", 0.0), trial.params["low_rank"], fmt, precision,
                          layer_ratios=groups, importance=trial.params.get("importance"),
                          distill=trial.params.get("distill", False))
            c = self.space.normalized(c)
            # the asked trial is closed either way (a FAIL tagged edgekit_ask: TPE's samplers ignore it); the
            # measured one is added from the history, with its figures and constraints
            trial.set_user_attr("edgekit_ask", "proposed" if c.key() not in seen else "already measured")
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            if c.key() not in seen:
                return c, "tpe"
        proposal = self.fallback.propose(done)  # a small grid: TPE's favourite points are all measured
        return (proposal[0], "tpe (its picks were all measured: a random unmeasured point)") if proposal else None


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("--strategy tpe needs Optuna (5 or later)", "pip install 'edgekit[optimize]' (or pip install optuna)",
                                     extra="optimize") from None
    if int(optuna.__version__.split(".")[0]) < 5:  # create_trial(constraints=...) arrived in Optuna 5
        raise MissingDependencyError(f"--strategy tpe needs Optuna 5 or later, not {optuna.__version__}",
                                     "pip install -U 'edgekit[optimize]'", extra="optimize")
    return optuna


def make_strategy(name: str, space: SearchSpace, seed: int, budget: Budget, folder: Path | None = None) -> Any:
    """The strategy ``name``; ``folder`` is the study folder (TPE keeps its Optuna study there)."""
    table: dict[str, Callable[..., Any]] = {"random": RandomSearch, "netadapt": NetAdapt, "tpe": TPESearch}
    if name not in table:
        raise UsageError(f"unknown strategy {name!r}", f"choose one of {', '.join(STRATEGIES)}")
    return table[name](space, seed, budget, folder)


__all__ = ["NetAdapt", "OPTUNA_FILE", "RandomSearch", "STRATEGIES", "TPESearch", "import_optuna", "make_strategy"]
