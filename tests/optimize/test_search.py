"""The search's parts on recorded figures: budgets, the Pareto front, the recommendation, the
strategies' proposals, the history and the study key. No trial runs here (test_study.py runs them)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgekit.errors import MissingDependencyError, UsageError
from edgekit.optimize import Budget, Candidate, History, SearchSpace, TrialRecord, hypervolume, pareto_front
from edgekit.optimize.budget import closest, recommend
from edgekit.optimize.history import check_study
from edgekit.optimize.strategies import NetAdapt, RandomSearch, make_strategy

SPACE = SearchSpace(exports=(("tflite", "int8"), ("tflite", "fp32")), prune_ratios=(0.0, 0.25, 0.5),
                    low_ranks=(None, 0.5), low_rank_layers=("classifier.1",))


def rec(n: int, metric: float, p50: float, size: int, cand: Candidate | None = None, status: str = "ok") -> TrialRecord:
    return TrialRecord(n, cand or Candidate(prune_ratio=n / 100), status=status, metric=metric,
                       latency_p50_ms=p50, latency_p90_ms=p50 * 1.1, size_bytes=size)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_latency_ms": -1.0}, "max_latency_ms must be a number > 0"),
    ({"max_latency_ms": 0.0}, "max_latency_ms must be a number > 0"),
    ({"max_size_kb": float("nan")}, "max_size_kb"),
    ({"max_drop_pt": -0.5}, "max_drop_pt must be a number >= 0"),
    ({"max_memory_mib": 0}, "max_memory_mib must be a number > 0"),
])
def test_bad_budgets_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        Budget(**kwargs).check()
    Budget(max_drop_pt=0.0).check()  # no drop at all is a valid (strict) budget


def test_violations_name_each_missed_limit() -> None:
    budget = Budget(max_latency_ms=0.05, max_size_kb=100, max_drop_pt=0.5)
    r = rec(1, metric=0.90, p50=0.06, size=150_000)
    missed = budget.violations(r, baseline_metric=0.92)
    assert missed == ["p50 0.06 ms > 0.05 ms", "size 150.0 KB > 100 KB", "drop 2.00 pt > 0.5 pt"]
    assert budget.violations(rec(2, 0.918, 0.04, 90_000), 0.92) == []
    memory = Budget(max_memory_mib=60)
    r.peak_rss_mib = 83.5
    assert memory.violations(r, 0.92) == ["peak memory 83.5 MiB > 60 MiB"]
    r.peak_rss_mib = None  # a target that could not measure it does not pass a memory budget
    assert memory.violations(r, 0.92) == ["peak memory not measured on this target"]


def test_pareto_front_drops_dominated_and_duplicate_points() -> None:
    records = [rec(0, 0.92, 0.10, 400_000), rec(1, 0.91, 0.05, 100_000), rec(2, 0.90, 0.06, 120_000),
               rec(3, 0.91, 0.05, 100_000), rec(4, 0.50, 0.02, 20_000), rec(5, 0.0, 0.01, 1, status="failed")]
    records[5].metric = None
    front = pareto_front(records)
    assert [r.number for r in front] == [4, 1, 0]  # 2 is dominated by 1; 3 duplicates 1; 5 failed


def test_recommend_is_the_most_accurate_within_budget_and_closest_otherwise() -> None:
    records = [rec(0, 0.92, 0.10, 400_000), rec(1, 0.91, 0.05, 100_000), rec(2, 0.915, 0.07, 110_000),
               rec(3, 0.80, 0.03, 30_000)]
    assert recommend(records, Budget(max_latency_ms=0.08), 0.92).number == 2
    assert recommend(records, Budget(max_latency_ms=0.08, max_drop_pt=0.3), 0.92) is None
    assert recommend(records, Budget(), 0.92).number == 0
    assert closest(records, Budget(max_latency_ms=0.08, max_drop_pt=0.3), 0.92).number == 2


def test_the_full_set_decides_between_the_rescored_trials() -> None:
    from edgekit.optimize.api import FinalScore, _recommend_on_full

    base, a, b = rec(0, 0.90, 1.0, 100), rec(1, 0.90, 0.5, 50), rec(2, 0.89, 0.4, 40)
    budget = Budget(max_drop_pt=0.5, max_latency_ms=0.6)

    def finals(*metrics: float) -> dict[int, FinalScore]:
        return {n: FinalScore(m, 10_000, 1.0, 1.1) for n, m in enumerate(metrics)}

    # on the slice, 1 beats 2; on the full set 2 is the more accurate and still within the drop
    assert _recommend_on_full([base, a, b], finals(0.90, 0.893, 0.897), budget, a, base).number == 2
    # 1 misses the drop on the full set, 2 does not
    assert _recommend_on_full([base, a, b], finals(0.90, 0.89, 0.896), budget, a, base).number == 2
    # neither meets it on the full set: the slice's choice stays (its full-set drop shows the miss)
    assert _recommend_on_full([base, a, b], finals(0.90, 0.89, 0.88), budget, a, base).number == 1


def test_a_study_that_missed_on_the_slice_is_judged_on_the_full_set_too() -> None:
    from edgekit.optimize.api import FinalScore, _not_met, _recommend_on_full

    base, a, b = rec(0, 0.92, 1.0, 100), rec(1, 0.905, 0.5, 50), rec(2, 0.90, 0.4, 40)
    budget = Budget(max_drop_pt=0.5, max_latency_ms=0.6)  # on the slice both miss the drop (1.5 and 2 pt)

    def finals(*metrics: float) -> dict[int, FinalScore]:
        return {n: FinalScore(m, 10_000, 1.0, 1.1) for n, m in enumerate(metrics)}

    # the slice's 1,000 samples exaggerated the drop: on the full set 1 is within 0.5 pt
    assert _recommend_on_full([base, a, b], finals(0.91, 0.906, 0.90), budget, None, base).number == 1
    assert _recommend_on_full([base, a, b], finals(0.91, 0.90, 0.899), budget, None, base) is None
    # the error names the closest by its full-set figures
    error = _not_met([base, a, b], finals(0.91, 0.899, 0.902), budget, base, 3)
    assert error.closest is b
    assert str(error).startswith("no candidate met p50 ≤ 0.6 ms, drop ≤ 0.5 pt in 3 trials; closest: trial 2 (")
    assert "drop 0.80 pt > 0.5 pt, on 10,000 evaluation samples)" in str(error)


def test_hypervolume_grows_with_a_better_front() -> None:
    worse = [rec(0, 0.92, 0.10, 1), rec(1, 0.80, 0.05, 1)]
    better = worse + [rec(2, 0.91, 0.05, 1)]
    assert hypervolume(better, ref_latency_ms=0.2) > hypervolume(worse, ref_latency_ms=0.2) > 0
    # exact area: [0.05, 0.10) at 0.80, [0.10, 0.20) at 0.92
    assert hypervolume(worse, ref_latency_ms=0.2) == pytest.approx(0.05 * 0.80 + 0.10 * 0.92)


def test_candidate_recipe_is_an_edgekit_recipe() -> None:
    from edgekit.compress.recipe import load_recipe

    space = SearchSpace(exports=(("onnx", "fp32"),), low_rank_layers=("classifier.1",), finetune_epochs=2,
                        finetune_batches=7)
    steps = space.recipe(Candidate(0.5, 0.25, "onnx", "fp32"))
    recipe = load_recipe(steps)  # validated as `edgekit compress` would
    assert [s["prune"]["ratio"] if "prune" in s else None for s in steps][0] == 0.5
    assert steps[1] == {"low_rank": {"rank_ratio": 0.25, "layers": ["classifier.1"]}}
    assert steps[2]["finetune"] == {"epochs": 2, "lr": 1e-3, "max_batches": 7}
    assert len(recipe.steps) == 3
    assert space.recipe(Candidate(0.0, None, "onnx", "int8")) == []  # export only: nothing to compress


def test_random_search_is_seeded_and_never_repeats() -> None:
    def draws(seed: int) -> list[str]:
        strategy, done = RandomSearch(SPACE, seed, Budget()), [rec(0, 0.9, 0.1, 1, SPACE.baseline())]
        while (p := strategy.propose(done)) is not None:
            done.append(rec(len(done), 0.9, 0.1, 1, p[0]))
        return [r.candidate.key() for r in done]

    a, b = draws(1), draws(1)
    assert a == b
    assert len(set(a)) == len(a) == 3 * 2 * 2  # the whole space, each once, then None
    assert draws(2) != a


def _netadapt_run(latency: dict, metric: dict, budget: Budget) -> list[TrialRecord]:
    """NetAdapt driven to its end with figures looked up per candidate."""
    strategy = NetAdapt(SPACE, 0, budget)
    done = [rec(0, 0.92, 0.10, 400_000, SPACE.baseline())]
    while (p := strategy.propose(done)) is not None:
        c = p[0]
        done.append(rec(len(done), metric(c), latency(c), 1000))
        done[-1].candidate = c
        assert "netadapt step" in p[1]
    return done


def test_netadapt_keeps_the_most_accurate_proposal_that_meets_each_step_target() -> None:
    def latency(c: Candidate) -> float:
        return 0.10 * (1 - c.prune_ratio) * (0.4 if c.precision == "int8" else 1) * (0.9 if c.low_rank else 1)

    def metric(c: Candidate) -> float:
        return 0.92 - c.prune_ratio * 0.05 - (0.001 if c.precision == "int8" else 0) - (0.02 if c.low_rank else 0)

    done = _netadapt_run(latency, metric, Budget())
    cands = [r.candidate for r in done]
    # step 1 from the baseline: prune 0.25, low-rank 0.5, tflite/int8; target 0.08 ms: int8 (0.04) and
    # prune 0.25 (0.075) meet it, int8 is the more accurate: step 2 starts from int8
    assert cands[1:4] == [Candidate(0.25, None, "tflite", "fp32"), Candidate(0.0, 0.5, "tflite", "fp32"),
                          Candidate(0.0, None, "tflite", "int8")]
    assert cands[4] == Candidate(0.25, None, "tflite", "int8")
    assert len({c.key() for c in cands}) == len(cands)
    # replaying the same figures gives the same path (what resuming relies on)
    assert [r.candidate for r in _netadapt_run(latency, metric, Budget())] == cands
    # a latency budget met by the step-1 choice ends the search there
    short = _netadapt_run(latency, metric, Budget(max_latency_ms=0.05))
    assert len(short) == 4


def test_netadapt_shrinks_one_layer_group_per_proposal_and_all_at_once() -> None:
    space = SearchSpace(exports=(("onnx", "fp32"),), prune_ratios=(0.0, 0.25, 0.5), low_ranks=(None,),
                        prune_groups=("features.0.0", "features.1.0"))
    cost = {"features.0.0": 0.01, "features.1.0": 0.04}  # ms saved per unit of ratio: layer 1 is the heavy one

    def latency(c: Candidate) -> float:
        return 0.1 - sum(cost[n] * c.ratio_of(n) for n in cost)

    strategy = NetAdapt(space, 0, Budget())
    done = [rec(0, 0.92, 0.10, 1000, space.baseline())]
    while (p := strategy.propose(done)) is not None:
        c = p[0]
        done.append(rec(len(done), 0.92 - 0.01 * sum(c.ratio_of(n) for n in cost), latency(c), 1000, c))
    cands = [r.candidate for r in done]
    # step 1: each group's next ratio, then every group's next ratio at once (a per-layer cut, not a
    # global-scope ratio)
    assert cands[1] == Candidate(0.0, None, "onnx", "fp32", (("features.0.0", 0.25),))
    assert cands[2] == Candidate(0.0, None, "onnx", "fp32", (("features.1.0", 0.25),))
    assert cands[3] == Candidate(0.0, None, "onnx", "fp32", (("features.0.0", 0.25), ("features.1.0", 0.25)))
    # none meets step 1's 20 % target (0.08 ms): the fastest, the uniform cut (0.0875 ms), is kept;
    # step 2 cuts each group one step deeper, then both
    assert cands[4] == Candidate(0.0, None, "onnx", "fp32", (("features.0.0", 0.5), ("features.1.0", 0.25)))
    assert cands[5] == Candidate(0.0, None, "onnx", "fp32", (("features.0.0", 0.25), ("features.1.0", 0.5)))
    assert cands[6] == Candidate(0.0, None, "onnx", "fp32", (("features.0.0", 0.5), ("features.1.0", 0.5)))
    assert len(cands) == 7  # nothing left above 0.5: the search ends
    steps = space.recipe(cands[5])
    assert steps[0]["prune"]["layer_ratios"] == {"features.0.0": 0.25, "features.1.0": 0.5}
    assert steps[0]["prune"]["ratio"] == 0.0
    assert Candidate.from_dict(json.loads(cands[5].key())) == cands[5]  # survives the history's JSON


def test_netadapt_stops_proposing_an_export_that_measured_slower() -> None:
    space = SearchSpace(exports=(("tflite", "fp32"), ("tflite", "int8")), prune_ratios=(0.0, 0.25, 0.5, 0.75),
                        low_ranks=(None,))

    def latency(c: Candidate) -> float:  # an AVX2 host: int8 slower than fp32
        return 0.1 * (1 - c.prune_ratio) * (1.3 if c.precision == "int8" else 1)

    strategy = NetAdapt(space, 0, Budget())
    done = [rec(0, 0.92, 0.10, 1000, space.baseline())]
    while (p := strategy.propose(done)) is not None:
        c = p[0]
        done.append(rec(len(done), 0.92 - 0.01 * c.prune_ratio, latency(c), 1000, c))
    int8 = [r.candidate for r in done if r.candidate.precision == "int8"]
    assert int8 == [Candidate(0.0, None, "tflite", "int8")]  # measured once, at step 1, then retired
    assert [r.candidate.prune_ratio for r in done if r.candidate.precision == "fp32"] == [0.0, 0.25, 0.5, 0.75]


def test_a_speedup_budget_becomes_a_latency_limit_once_the_baseline_is_measured() -> None:
    budget = Budget(min_speedup=2.0, max_drop_pt=0.5)
    resolved = budget.for_baseline(0.08)
    assert resolved.max_latency_ms == pytest.approx(0.04)
    assert "≥ 2× faster" in resolved.describe() and "p50 ≤ 0.04 ms" in resolved.describe()
    assert Budget(max_latency_ms=0.03, min_speedup=2.0).for_baseline(0.08).max_latency_ms == 0.03  # the tighter
    assert resolved.violations(rec(1, 0.92, 0.05, 10, Candidate()), 0.92) == ["p50 0.05 ms > 0.04 ms"]
    with pytest.raises(UsageError, match="min_speedup"):
        Budget(min_speedup=0).check()


def test_history_round_trip_and_a_line_cut_short(tmp_path: Path) -> None:
    h = History(tmp_path)
    h.append(rec(0, 0.9, 0.1, 10, Candidate()))
    h.append(rec(1, 0.8, 0.05, 5, Candidate(0.5)))
    with open(h.path, "a") as f:
        f.write('{"number": 2, "candid')  # killed mid-write
    again = History(tmp_path)
    assert [r.number for r in again.records] == [0, 1]
    assert again.find(Candidate(0.5)).metric == 0.8
    assert again.find(Candidate(0.25)) is None
    again.append(rec(2, 0.7, 0.04, 4, Candidate(0.75)))  # the trial reran: a whole line again
    assert [r.number for r in History(tmp_path).records] == [0, 1, 2]
    (tmp_path / "history.jsonl").write_text('{"number": 0}\n' + h.path.read_text())
    with pytest.raises(UsageError, match="line 1 is not a trial record"):
        History(tmp_path)


def test_a_different_study_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    study = {"model": "example:fashion-cnn", "strategy": "random", "seed": 0}
    assert check_study(tmp_path, study) is False
    assert check_study(tmp_path, study) is True
    with pytest.raises(UsageError, match="different study .*changed: seed"):
        check_study(tmp_path, {**study, "seed": 1})
    assert json.loads((tmp_path / "study.json").read_text()) == study


def test_tpe_without_optuna_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match="needs Optuna") as info:
        make_strategy("tpe", SPACE, 0, Budget())
    assert "pip install 'edgekit[optimize]'" in info.value.one_line()
    assert info.value.extra == "optimize"


def test_tpe_proposes_new_candidates_of_the_space_and_resumes_from_records() -> None:
    pytest.importorskip("optuna")
    budget = Budget(max_latency_ms=0.05)
    strategy = make_strategy("tpe", SPACE, 3, budget)
    done = [rec(0, 0.92, 0.10, 400_000, SPACE.baseline())]
    for _ in range(8):
        c, note = strategy.propose(done)
        assert SPACE.candidates_allowed(c) and note.startswith("tpe")
        done.append(rec(len(done), 0.9 - c.prune_ratio / 10, 0.1 * (1 - c.prune_ratio), 1000, c))
    assert len({r.candidate.key() for r in done}) == len(done)
    fresh = make_strategy("tpe", SPACE, 3, budget)  # a resumed run: the history is told first
    c, _ = fresh.propose(done)
    assert c.key() not in {r.candidate.key() for r in done}
    assert len(fresh.study.trials) >= len(done)


def test_tpe_keeps_its_optuna_study_in_the_study_folder_and_adds_each_trial_once(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from edgekit.optimize.strategies import OPTUNA_FILE

    budget = Budget(max_latency_ms=0.05)
    done = [rec(0, 0.92, 0.10, 400_000, SPACE.baseline())]
    first = make_strategy("tpe", SPACE, 3, budget, tmp_path)
    for _ in range(4):
        c, _note = first.propose(done)
        done.append(rec(len(done), 0.9 - c.prune_ratio / 10, 0.1 * (1 - c.prune_ratio), 1000, c))
    done.append(rec(len(done), 0.0, 0.0, 0, Candidate(0.5, None, "tflite", "fp32"), status="skipped"))
    assert (tmp_path / OPTUNA_FILE).is_file()

    resumed = make_strategy("tpe", SPACE, 3, budget, tmp_path)  # a rerun: the stored study is loaded
    assert len(resumed.told) == 4  # the baseline and three proposals were told by the first run's proposals
    c, _note = resumed.propose(done)
    assert c.key() not in {r.candidate.key() for r in done}
    stored = optuna.load_study(study_name="edgekit", storage=f"sqlite:///{tmp_path / OPTUNA_FILE}")
    measured = [t for t in stored.trials if "edgekit_key" in t.user_attrs]
    assert sorted(t.user_attrs["edgekit_trial"] for t in measured) == list(range(len(done)))  # each once
    complete = [t for t in measured if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(done) - 1  # the skipped candidate is stored as failed, not as a result
    assert all(t.values[1] == pytest.approx(done[t.user_attrs["edgekit_trial"]].latency_p50_ms) for t in complete)


KNOBS = SearchSpace(exports=SPACE.exports, prune_ratios=SPACE.prune_ratios, low_ranks=SPACE.low_ranks,
                    low_rank_layers=SPACE.low_rank_layers, importances=("magnitude", "taylor"),
                    distill_choices=(False, True))


def test_criterion_and_kd_knobs_make_edgekit_recipes() -> None:
    from edgekit.compress.recipe import load_recipe

    steps = KNOBS.recipe(Candidate(0.5, None, "tflite", "fp32", importance="taylor", distill=True))
    assert steps[0]["prune"]["importance"] == "taylor"
    assert steps[1] == {"distill": {"teacher": "original", "training": {"epochs": 1, "lr": 1e-3}}}
    assert len(load_recipe(steps).steps) == 2  # validated as `edgekit compress` would
    assert KNOBS.recipe(Candidate(0.5, None, "tflite", "fp32"))[0]["prune"]["importance"] == "magnitude"


def test_knobs_are_left_out_of_keys_and_study_files_unless_set() -> None:
    """Studies from before the criterion and KD knobs keep their keys (their histories still match)."""
    assert json.loads(Candidate(0.5).key()).keys() == {"prune_ratio", "low_rank", "format", "precision", "layer_ratios"}
    assert json.loads(Candidate(0.5, distill=True).key())["distill"] is True
    assert "importances" not in SPACE.to_dict() and "distill_choices" not in SPACE.to_dict()
    assert KNOBS.to_dict()["distill_choices"] == [False, True]
    assert Candidate.from_dict(json.loads(Candidate(0.5, importance="taylor", distill=True).key())) == Candidate(
        0.5, importance="taylor", distill=True)


def test_knobs_a_recipe_would_not_use_are_normalized_away() -> None:
    assert KNOBS.normalized(Candidate(0.0, None, importance="taylor", distill=True)) == Candidate(0.0, None)
    assert KNOBS.normalized(Candidate(0.0, 0.5, importance="taylor", distill=True)) == Candidate(0.0, 0.5, distill=True)
    assert KNOBS.normalized(Candidate(0.5, importance="magnitude")) == Candidate(0.5)  # the space's own criterion


def test_random_search_covers_the_knobs_once_each() -> None:
    strategy, done = RandomSearch(KNOBS, 0, Budget()), [rec(0, 0.9, 0.1, 1, KNOBS.baseline())]
    while (p := strategy.propose(done)) is not None:
        assert KNOBS.candidates_allowed(p[0])
        done.append(rec(len(done), 0.9, 0.1, 1, p[0]))
    keys = [r.candidate.key() for r in done]
    # no compression: 2 exports; low-rank only: × KD or not; pruned (2 ratios × 2 ranks): × 2 criteria × KD or not
    assert len(set(keys)) == len(keys) == 2 + 2 * 2 + 2 * 2 * 2 * 2 * 2
    assert any(r.candidate.importance == "taylor" and r.candidate.distill for r in done)


def test_tpe_searches_the_knobs_and_netadapt_fine_tunes_by_kd_when_offered() -> None:
    pytest.importorskip("optuna")
    tpe, done = make_strategy("tpe", KNOBS, 0, Budget()), [rec(0, 0.92, 0.10, 400_000, KNOBS.baseline())]
    for _ in range(12):
        c, _note = tpe.propose(done)
        assert KNOBS.candidates_allowed(c) and KNOBS.normalized(c) == c
        done.append(rec(len(done), 0.9, 0.1, 1000, c))
    assert {"importance", "distill"} <= set(tpe.study.trials[-1].params)
    proposals = NetAdapt(KNOBS, 0, Budget(max_latency_ms=0.01))._neighbours(Candidate(0.0, None, "tflite", "fp32"), set())
    assert all(c.distill and c.importance is None for c in proposals if c.compresses())


def test_per_group_draws_each_layer_groups_ratio_for_random_and_tpe() -> None:
    pytest.importorskip("optuna")
    groups = ("features.0", "features.3", "classifier.1")
    space = SearchSpace(exports=(("onnx", "fp32"),), prune_ratios=(0.0, 0.25, 0.5), prune_groups=groups, per_group=True)
    assert space.to_dict()["per_group"] is True
    for name in ("random", "tpe"):
        strategy, done = make_strategy(name, space, 0, Budget()), [rec(0, 0.9, 0.1, 1, space.baseline())]
        for _ in range(10):
            c, _note = strategy.propose(done)
            assert c.prune_ratio == 0.0 and space.candidates_allowed(c) and space.normalized(c) == c
            done.append(rec(len(done), 0.9, 0.1, 1, c))
        cut = [dict(r.candidate.layer_ratios) for r in done[1:]]
        assert len({r.candidate.key() for r in done}) == len(done)
        assert len({tuple(sorted(d.items())) for d in cut}) == 10 and any(len(d) >= 2 for d in cut)
        steps = space.recipe(done[-1].candidate)
        if done[-1].candidate.layer_ratios:
            assert steps[0]["prune"]["layer_ratios"] == dict(done[-1].candidate.layer_ratios)
    assert space.normalized(Candidate(0.25, layer_ratios=(("features.0", 0.25), ("features.3", 0.5)))) == Candidate(
        0.25, layer_ratios=(("features.3", 0.5),))  # a layer cut like the rest is no override


def test_the_long_fine_tune_is_a_knob_of_its_own_outside_the_search_space() -> None:
    space = SearchSpace(exports=(("tflite", "fp32"),), prune_groups=("features.0.0",), finetune_epochs=2,
                        finetune_batches=7)
    long = Candidate(0.0, None, "tflite", "fp32", (("features.0.0", 0.5),), distill=True, epochs=8)
    training = space.recipe(long)[-1]["distill"]["training"]
    assert training == {"epochs": 8, "lr": 3e-3, "schedule": "onecycle", "max_batches": 7}
    assert space.recipe(replace(long, epochs=None))[-1]["distill"]["training"]["epochs"] == 2
    assert Candidate.from_dict(json.loads(long.key())) == long and '"epochs": 8' in long.key()
    assert "epochs" not in replace(long, epochs=None).key()  # studies before the knob keep their keys
    assert space.normalized(Candidate(0.0, None, "tflite", "fp32", epochs=8)).epochs is None  # nothing to fine-tune
    assert not space.candidates_allowed(long) and space.candidates_allowed(replace(long, epochs=None, distill=False))
    assert "8 epochs" in long.describe()


def test_the_long_fine_tune_takes_the_most_accurate_front_points_within_every_budget_but_the_drop() -> None:
    from edgekit.optimize.api import _long_finetunes

    space = SearchSpace(exports=(("tflite", "fp32"),), prune_ratios=(0.0, 0.25, 0.5, 0.75), distill_choices=(False, True))
    base = rec(0, 0.92, 0.10, 400_000, space.baseline())
    fast = [rec(n, m, p, 1000, Candidate(r, None, "tflite", "fp32")) for n, m, p, r in
            ((1, 0.915, 0.06, 0.25), (2, 0.91, 0.05, 0.5), (3, 0.88, 0.03, 0.75))]
    budget = Budget(max_latency_ms=0.055, max_drop_pt=0.1)  # 2 and 3 meet the latency, neither the drop
    picks = _long_finetunes([base, *fast], budget, space, epochs=8, top=1)
    assert picks == [Candidate(0.5, None, "tflite", "fp32", distill=True, epochs=8)]  # 2: the more accurate
    assert [c.prune_ratio for c in _long_finetunes([base, *fast], budget, space, 8, top=5)] == [0.5, 0.75]
    # no latency budget: the most accurate compressed points (the baseline has nothing to fine-tune)
    assert [c.prune_ratio for c in _long_finetunes([base, *fast], Budget(), space, 8, top=2)] == [0.25, 0.5]
    assert _long_finetunes([base, *fast], budget, space, epochs=0, top=2) == []
    long = rec(4, 0.918, 0.05, 1000, picks[0])
    assert 0.5 not in [c.prune_ratio for c in _long_finetunes([base, *fast, long], budget, space, 8, top=5)]
