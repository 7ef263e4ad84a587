"""Real studies on the example CNN, measured on this host under the pi4 profile (--emulate).

Kept small so the file runs in about two minutes on two busy cores: ONNX fp32 only (no converter
for int8 here; test_int8_study.py, marked slow, searches the profile's formats), 200 evaluation
samples per trial, 5 fine-tune batches, 20 timed runs. One study is shared: it is run, resumed
with more trials, and asked for budgets it can and cannot meet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgekit.cli import main
from edgekit.errors import ConnectionFailedError, ExitCode, UsageError
from edgekit.optimize import BudgetNotMetError, Candidate, optimize, pareto_front

SMALL = dict(data="example:fashion-mnist", eval_data="example:fashion-mnist", emulate=True, eval_limit=200,
             final_eval_limit=300, finetune_epochs=1, finetune_batches=5, prune_ratios=[0.5, 0.75],
             exports=[("onnx", "fp32")], threads=1, runs=20, strategy="random", seed=0)


def history(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Three trials: the baseline and two random draws."""
    folder = tmp_path_factory.mktemp("study")
    result = optimize("example:fashion-cnn", "pi4", out=folder, trials=3, **SMALL)
    return folder, result


def test_a_study_measures_each_trial_on_the_target_and_writes_its_files(study: tuple[Path, Any]) -> None:
    folder, result = study
    rows = history(folder)
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert result.measured == 3 and result.reused == 0
    base = rows[0]
    assert base["candidate"] == {"prune_ratio": 0.0, "low_rank": None, "format": "onnx", "precision": "fp32",
                                 "layer_ratios": []}
    assert base["eval_samples"] == 200 and base["extra"]["threads"] == 1 and base["extra"]["runs"] >= 20  # timed >= 1 s
    assert 0.85 < base["metric"] <= 1.0  # the trained example on the first 200 test images, in onnxruntime
    for r in rows[1:]:
        assert r["status"] == "ok" and r["candidate"]["prune_ratio"] in (0.5, 0.75)
        # channel pruning removes weights: the exported file is smaller than the baseline's
        assert r["size_bytes"] < 0.5 * base["size_bytes"]
        assert (folder / r["artifact"]).is_file()
        assert (folder / "trials" / f"{r['number']:03d}" / "recipe.yaml").is_file()
    # no budget: the front, the slice's best and the baseline are re-scored on 300 samples, and the most
    # accurate of them there is recommended
    front = json.loads((folder / "pareto.json").read_text())["front"]
    assert 0 in [p["trial"] for p in front]
    assert set(result.front_final) >= {p["trial"] for p in front} | {0}
    assert all(f.eval_samples == 300 for f in result.front_final.values())
    best_full = max(result.front_final.values(), key=lambda f: f.metric)
    assert result.recommended_final.metric == best_full.metric
    assert result.recommended_final is result.front_final[result.recommended.number]
    assert result.baseline_final is result.front_final[0]
    for p in front:
        assert p["metric_full"] == result.front_final[p["trial"]].metric and p["eval_samples_full"] == 300
        assert p["drop_pt_full"] == round(100 * (result.baseline_final.metric - p["metric_full"]), 3)
    assert (folder / "recommended.onnx").is_file() and (folder / "recipe.yaml").is_file()
    page = (folder / "front.html").read_text()
    assert page.count("<svg") == 2 and "trial 0:" in page  # the front plotted, offline
    assert json.loads((folder / "result.json").read_text())["trials"] == 3


def test_rerun_with_more_trials_runs_only_the_new_ones(study: tuple[Path, Any]) -> None:
    folder, first = study
    before = (folder / "history.jsonl").read_text()
    result = optimize("example:fashion-cnn", "pi4", out=folder, trials=4, **SMALL)
    assert result.reused == 3 and result.measured == 1
    rows = history(folder)
    assert (folder / "history.jsonl").read_text().startswith(before)  # the old trials were not rerun
    assert len(rows) == 4 and rows[3]["number"] == 3
    assert [r.candidate for r in result.trials[:3]] == [r.candidate for r in first.trials]
    assert rows[3]["candidate"] not in [r["candidate"] for r in rows[:3]]


def test_a_size_budget_recommends_a_compressed_trial_and_its_rerunnable_recipe(study: tuple[Path, Any]) -> None:
    from edgekit.compress.recipe import load_recipe

    folder, _ = study
    result = optimize("example:fashion-cnn", "pi4", out=folder, trials=4, max_size_kb=200, **SMALL)
    assert result.measured == 0  # every trial came from the history
    # the most accurate on the full evaluation set of the re-scored trials within the size budget
    sizes = {r["number"]: r["size_bytes"] for r in history(folder)}
    within = [n for n in result.front_final if sizes[n] <= 200_000]
    assert result.recommended.number in within
    assert result.recommended_final.metric == max(result.front_final[n].metric for n in within)
    assert result.recommended.size_bytes <= 200_000
    text = (folder / "recipe.yaml").read_text()
    assert "edgekit compress example:fashion-cnn --recipe recipe.yaml" in text
    steps = load_recipe(folder / "recipe.yaml").steps
    assert steps[0].kind == "prune" and steps[0].config.ratio == result.recommended.candidate.prune_ratio


def test_an_infeasible_budget_fails_naming_the_closest_trial(study: tuple[Path, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = study
    with pytest.raises(BudgetNotMetError, match=r"no candidate met p50 ≤ 1e-06 ms in 4 trials; closest: trial \d") as info:
        optimize("example:fashion-cnn", "pi4", out=folder, trials=4, max_latency_ms=1e-6, **SMALL)
    assert info.value.closest is not None
    fastest = min(history(folder), key=lambda r: r["latency_p50_ms"])
    assert info.value.closest.number == fastest["number"]
    code = main(["-q", "optimize", "example:fashion-cnn", "--device", "pi4", "--emulate", "--data", "example:fashion-mnist",
                 "--eval", "example:fashion-mnist", "--eval-limit", "200", "--final-eval-limit", "300", "--trials", "4",
                 "--max-latency", "0.000001", "--out", str(folder), "--seed", "0", "--strategy", "random",
                 "--threads", "1", "--runs", "20", "--finetune-batches", "5", "--prune-ratios", "0.5,0.75",
                 "--exports", "onnx/fp32"])
    err = capsys.readouterr().err
    assert code == ExitCode.FAILURE
    assert err.startswith("error: no candidate met p50 ≤ 1e-06 ms in 4 trials; closest: trial ")
    assert len(err.strip().splitlines()) == 1
    assert len(history(folder)) == 4  # nothing was measured again
    code = main(["-q", "optimize", "example:fashion-cnn", "--device", "pi4", "--emulate", "--eval", "example:fashion-mnist",
                 "--out", str(folder), "--seed", "1"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "holds a different study" in err and len(err.strip().splitlines()) == 1


def test_the_front_points_within_the_budget_get_the_long_fine_tune_as_trials(study: tuple[Path, Any],
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = study
    result = optimize("example:fashion-cnn", "pi4", out=folder, trials=4, max_size_kb=200, final_epochs=1,
                      final_top=1, **SMALL)
    rows = history(folder)
    assert result.measured == 1 and result.long_finetuned == [4] and rows[4]["number"] == 4
    # the most accurate compressed point of the search's front (before the long fine-tune joined it, which
    # may dominate its own source) within the size budget, fine-tuned longer: same shape
    within = [r for r in pareto_front(result.trials[:4]) if r.candidate.compresses() and r.size_bytes <= 200_000]
    picked = min(within, key=lambda r: (-r.metric, r.latency_p50_ms)) if within else None
    long = result.trials[-1]
    assert picked is not None and long.candidate == Candidate(**{**picked.candidate.__dict__, "epochs": 1})
    assert rows[4]["candidate"]["epochs"] == 1 and "long fine-tune" in rows[4]["strategy_note"]
    assert abs(long.size_bytes - picked.size_bytes) < 0.01 * picked.size_bytes  # a fine-tune changes no shape
    recipe = (folder / "trials" / "004" / "recipe.yaml").read_text()
    assert "schedule: onecycle" in recipe and "epochs: 1" in recipe
    assert json.loads((folder / "result.json").read_text())["long_finetuned"] == [4]
    # rerun: the long fine-tune comes from the history, nothing is measured again
    code = main(["-q", "optimize", "example:fashion-cnn", "--device", "pi4", "--emulate", "--data", "example:fashion-mnist",
                 "--eval", "example:fashion-mnist", "--eval-limit", "200", "--final-eval-limit", "300", "--trials", "4",
                 "--max-size", "200", "--final-epochs", "1", "--final-top", "1", "--out", str(folder), "--seed", "0",
                 "--strategy", "random", "--threads", "1", "--runs", "20", "--finetune-batches", "5",
                 "--prune-ratios", "0.5,0.75", "--exports", "onnx/fp32", "--json"])
    assert code == ExitCode.OK
    again = json.loads(capsys.readouterr().out)
    assert again["measured"] == 0 and again["long_finetuned"] == [4] and len(history(folder)) == 5


@pytest.mark.parametrize("argv, fragment", [
    (["--trials", "0"], "--trials: must be at least 1"),
    (["--max-latency", "-1"], "--max-latency: must be a positive number"),
    (["--max-latency", "0"], "--max-latency: must be a positive number"),
    (["--max-drop", "-0.5"], "--max-drop: must be a number >= 0"),
    (["--min-speedup", "0"], "--min-speedup: must be a positive number"),
    (["--strategy", "grid"], "invalid choice: 'grid'"),
])
def test_bad_budgets_and_counts_are_refused_with_one_line(argv: list[str], fragment: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["optimize", "example:fashion-cnn", "--device", "pi4", "--emulate", "--eval", "example:fashion-mnist",
              "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert info.value.code == ExitCode.USAGE
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_unknown_channel_criterion_is_refused_before_any_work(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["optimize", "example:fashion-cnn", "--device", "pi4", "--emulate", "--eval", "example:fashion-mnist",
                 "--out", str(tmp_path / "o"), "--importances", "magnitude,l2"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "unknown channel criteria ['l2']" in err and "--importances" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_api_refuses_zero_trials_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="trials must be an integer >= 1, not 0"):
        optimize("example:fashion-cnn", "pi4", out=tmp_path / "o", trials=0, **SMALL)
    assert not (tmp_path / "o").exists()


def test_a_device_lost_mid_study_fails_that_trial_and_netadapt_goes_on(tmp_path: Path) -> None:
    """NetAdapt's first step shrinks each layer group of the CNN in turn; the device drops the first."""
    from edgekit.deploy import deploy

    calls: list[str] = []

    def flaky_deploy(model: str, device: str, options: Any) -> Any:
        calls.append(options.recipe or model)
        if len(calls) == 2:  # the second trial: the board went away
            raise ConnectionFailedError("could not connect to pi@10.0.0.9: no route to host")
        return deploy(model, device, options)

    settings = {**SMALL, "strategy": "netadapt", "prune_ratios": [0.5]}
    result = optimize("example:fashion-cnn", "pi4", out=tmp_path, trials=3, deploy=flaky_deploy, **settings)
    rows = history(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["candidate"]["layer_ratios"] == [["features.0.0", 0.5]] and "no route to host" in rows[1]["error"]
    assert rows[2]["candidate"]["layer_ratios"] == [["features.1.0", 0.5]]
    assert rows[2]["strategy_note"].startswith("netadapt step 1")
    assert rows[2]["size_bytes"] < rows[0]["size_bytes"]  # half of one conv's channels (and the next's inputs) gone
    assert any("1 trial(s) failed" in n for n in result.notes)
    assert result.recommended.number in (0, 2)


@pytest.mark.ssh
def test_a_fleet_study_over_ssh_spreads_trials_over_the_boards(ssh_device, sshd_factory, tmp_path: Path) -> None:  # noqa: ANN001
    """Two real sshd boards on 127.0.0.1: the host prepares one candidate at a time, each board measures
    one at a time, every trial records the board that measured it."""
    import shutil
    import uuid

    from edgekit.fleet import FleetHost
    from tests.targets.test_ssh_deploy import ssh_options

    ssh_device.require_runtime()
    servers = [sshd_factory(name=f"opt{i}-{uuid.uuid4().hex[:6]}") for i in range(2)]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts_line() for s in servers))
    workdir = f"~/edgekit-optimize-{uuid.uuid4().hex[:8]}"
    boards = [FleetHost(f"{ssh_device.user}@{s.host}:{s.port}", name=f"board{i}") for i, s in enumerate(servers)]
    settings = {k: v for k, v in SMALL.items() if k != "emulate"}
    try:
        result = optimize("example:fashion-cnn", "pi4", out=tmp_path / "study", hosts=boards, trials=4,
                          ssh={**ssh_options(ssh_device), "known_hosts": str(known_hosts), "workdir": workdir},
                          **settings)
    finally:
        shutil.rmtree(ssh_device.remote_path(workdir), ignore_errors=True)
    rows = history(tmp_path / "study")
    assert [r["status"] for r in rows] == ["ok"] * 4, [r.get("error") for r in rows]
    assert rows[0]["extra"]["target"] == "board0"  # the baseline on the first board
    assert {r["extra"]["target"] for r in rows} == {"board0", "board1"}
    for server in servers:
        assert server.log_text().count("Accepted publickey") >= 1
    assert 0.85 < result.baseline.metric <= 1.0  # scored in the board's onnxruntime, on 200 test images
    assert result.recommended_final.eval_samples == 300
