"""``edgekit optimize --ray``: trials as Ray tasks on a real local Ray instance, each device a Ray
resource of capacity 1.

The boards are stand-in devices, on purpose (as in test_estimator.py): ``stand_in_board`` replaces
``edgekit.deploy`` through the ``deploy=`` seam, sleeps a moment and answers figures that follow from
the candidate, so these tests are about who runs which trial when, not about measuring. It is a
module-level function because Ray pickles it by reference: a worker imports it from this module
(Ray puts the driver's working directory, the repository, on the workers' ``sys.path``). Workers
are other processes, so the stand-in keeps its state in files of the study folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any, Iterator

import pytest
import yaml

ray = pytest.importorskip("ray")

from edgekit.errors import ConnectionFailedError, UsageError  # noqa: E402
from edgekit.fleet import FleetHost  # noqa: E402
from edgekit.optimize.distributed import RayPool, device_resource  # noqa: E402

BOARDS = ("one", "two", "steady", "flaky")  # the stand-in boards the cluster declares
STUDY = dict(data="example:fashion-mnist", eval_data="example:fashion-mnist", prune_ratios=[0.25, 0.5, 0.75],
             exports=[("onnx", "fp32")], strategy="random", seed=0)


def stand_in_board(model: str, device: str, options: Any) -> Any:
    """A stand-in device (no SSH, no runtime): 0.3 s per trial, p50 and accuracy from the prune ratio.

    Marks its board busy with a file created exclusively, so two trials on one board at once leave an
    ``overlap`` file whatever processes they ran in; ``pi@flaky`` is lost after its first trial."""
    if options.out_dir is None:  # the final re-score, in the driver after the search
        return _report(0.0)
    study = Path(options.out_dir).parents[2]  # <study>/trials/NNN/artifact
    busy = study / f"busy-{options.host}"
    try:
        os.close(os.open(busy, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        mine = True
    except FileExistsError:
        mine = False
        with open(study / "overlap", "a") as f:
            f.write(f"{options.host}\n")
    try:
        served = len(list(study.glob(f"served-{options.host}-*")))
        (study / f"served-{options.host}-{served}").touch()
        time.sleep(0.3)
        if options.host == "pi@flaky" and served >= 1:
            raise ConnectionFailedError("pi@flaky: no route to host")
        steps = yaml.safe_load(Path(options.recipe).read_text()) if options.recipe else []
        out = Path(options.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.onnx").write_bytes(b"stand-in")
        return _report(next((s["prune"]["ratio"] for s in steps if "prune" in s), 0.0))
    finally:
        if mine:
            busy.unlink()


def _report(ratio: float) -> Any:
    p50 = 1.0 - 0.6 * ratio
    return NS(accuracy=NS(metric="classification", values={"top1": 0.93 - 0.02 * ratio}, headline="top1", n=100),
              latency=NS(p50_ms=p50, p90_ms=p50 * 1.1, representative=True),
              artifact=NS(file="model.onnx", size_bytes=int(1e6 * (1 - ratio)), chosen_because=None),
              memory=NS(peak_rss_mib=50.0), settings={"threads": 1, "runs": 20})


def _no_overlap_per_board(records: list[Any]) -> None:
    """On each board, every trial started after the one before it ended."""
    for board in {r.extra["target"] for r in records}:
        spans = sorted((r.extra["started"], r.extra["ended"]) for r in records if r.extra["target"] == board)
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), (board, spans)


def test_auto_starts_a_local_ray_instance_and_shuts_it_down(tmp_path: Path) -> None:
    # before the module's cluster starts: with none running, `auto` starts one with the device declared
    if ray.is_initialized():
        pytest.skip("this process already holds a Ray connection (the auto start needs none)")
    from edgekit.optimize import optimize

    said: list[str] = []
    start = time.monotonic()
    result = optimize("example:fashion-cnn", "pi4", emulate=True, ray="auto", out=tmp_path, trials=3,
                      deploy=stand_in_board, progress=said.append, **STUDY)
    print(f"--ray auto, 3 trials: {time.monotonic() - start:.1f} s (a local Ray instance started and stopped)")
    assert any(m.startswith("started a local Ray instance") for m in said)
    assert not ray.is_initialized()  # shut down when the study ended
    workers = [r.extra["ray_worker"] for r in result.trials[1:]]
    assert len(workers) == 2 and all(w["pid"] != os.getpid() for w in workers)
    assert "ray_worker" not in result.trials[0].extra  # the baseline stays in the driver
    assert result.recommended.ok


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """A local Ray instance for this module: 2 CPUs, every stand-in board a resource of capacity 1."""
    start = time.monotonic()
    context = ray.init(num_cpus=2, resources={device_resource(b): 1 for b in BOARDS}, include_dashboard=False,
                       log_to_driver=False)
    print(f"ray.init(num_cpus=2): {time.monotonic() - start:.1f} s")
    yield context.address_info
    ray.shutdown()


def test_a_fleet_under_ray_measures_one_trial_per_board_at_a_time_in_ray_workers(
        ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    from edgekit.optimize import optimize

    boards = [FleetHost("pi@one", "one"), FleetHost("pi@two", "two")]
    result = optimize("example:fashion-cnn", "pi4", hosts=boards, ray="auto", out=tmp_path, trials=7,
                      deploy=stand_in_board, **STUDY)
    trials = result.trials
    assert len(trials) == 7 and all(r.ok for r in trials)
    assert all(r.extra["ray_worker"]["pid"] != os.getpid() for r in trials[1:])  # Ray worker processes
    assert {r.extra["target"] for r in trials[1:]} == {"one", "two"}  # both boards used
    assert not (tmp_path / "overlap").exists()  # the stand-in never saw two trials at once on a board
    _no_overlap_per_board(trials)
    spans = sorted((r.extra["started"], r.extra["ended"]) for r in trials[1:])
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # the two boards did work at the same time
    assert len({r.candidate.key() for r in trials}) == 7  # no candidate measured twice
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert sorted(row["number"] for row in rows) == list(range(7))
    assert all(row["status"] == "ok" for row in rows) and all("ray_worker" in row["extra"] for row in rows[1:])
    assert ray.is_initialized()  # the caller's Ray connection is left alone


def test_a_device_resource_admits_one_trial_at_a_time(ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    # two trials handed to one board at once (the study never does that; two studies on one cluster
    # can): the board's Ray resource runs them one after the other
    from edgekit.optimize.api import _Pending
    from edgekit.optimize.space import Candidate, SearchSpace
    from edgekit.optimize.trial import TrialSettings

    settings = TrialSettings(model="example:fashion-cnn", device="pi4", folder=tmp_path,
                             space=SearchSpace(exports=(("onnx", "fp32"),)), eval_data="example:fashion-mnist")
    board = FleetHost("pi@one", "one")
    with RayPool("auto", settings, ["one"], deploy=stand_in_board) as pool:
        futures = [pool.submit(_Pending(n, Candidate(prune_ratio=r), "lease", board, None, lambda: None))
                   for n, r in ((1, 0.25), (2, 0.5))]
        records = [f.result(timeout=120) for f in futures]
    assert [r.status for r in records] == ["ok", "ok"]
    assert not (tmp_path / "overlap").exists()
    _no_overlap_per_board(records)


def test_a_board_lost_under_ray_is_retired_and_the_study_finishes_on_the_other(
        ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    from edgekit.optimize import optimize

    boards = [FleetHost("pi@steady", "steady"), FleetHost("pi@flaky", "flaky")]
    result = optimize("example:fashion-cnn", "pi4", hosts=boards, ray="auto", out=tmp_path, trials=6,
                      deploy=stand_in_board, **STUDY)
    failed = [r for r in result.trials if r.status == "failed"]
    assert len(failed) == 1 and failed[0].extra["target"] == "flaky" and "no route to host" in failed[0].error
    assert failed[0].extra["error_type"] == "ConnectionFailedError"
    assert len(list(tmp_path.glob("served-pi@flaky-*"))) == 2  # lost: no trial after the failed one
    after = [r.extra["target"] for r in result.trials[result.trials.index(failed[0]) + 1:]]
    assert after and set(after) == {"steady"}  # the study went on without it
    assert len(result.trials) == 6 and result.recommended.ok


def test_a_missing_device_resource_is_refused_before_any_trial(ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    from edgekit.optimize.space import SearchSpace
    from edgekit.optimize.trial import TrialSettings

    settings = TrialSettings(model="example:fashion-cnn", device="pi4", folder=tmp_path,
                             space=SearchSpace(exports=(("onnx", "fp32"),)))
    with pytest.raises(UsageError, match="has no resource 'edgekit-device:ghost'") as raised:
        with RayPool("auto", settings, ["one", "ghost"]):
            pass
    assert """ray start --address HEAD:PORT --resources '{"edgekit-device:ghost": 1}'""" in raised.value.hint
    assert ray.is_initialized()


def test_the_cli_connects_to_a_cluster_by_address_and_names_the_missing_resource(
        ray_cluster: dict[str, Any], tmp_path: Path) -> None:
    # another process joins this module's cluster by its address, as a study on a real cluster does
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("hosts:\n  - host: pi@10.0.0.9\n    name: ghost\n")
    address = ray_cluster["gcs_address"]
    done = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", "-q", "optimize", "example:fashion-cnn", "--device", "pi4",
         "--hosts", str(fleet), "--ray", address, "--data", "example:fashion-mnist", "--eval",
         "example:fashion-mnist", "--exports", "onnx/fp32", "--out", str(tmp_path / "study")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the Ray cluster at {address} has no resource "
                                                   "'edgekit-device:ghost'")
    assert f"""ray start --address {address} --resources '{{"edgekit-device:ghost": 1}}'""" in lines[0]
    assert not (tmp_path / "study" / "history.jsonl").exists()  # refused before the baseline
    assert ray.get(ray.remote(lambda: 1).remote()) == 1  # the cluster lives on after it disconnected


def test_the_ray_flag_reaches_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgekit.optimize
    from edgekit.cli import main

    seen: dict[str, Any] = {}

    def fake_optimize(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise UsageError("stop here")

    monkeypatch.setattr(edgekit.optimize, "optimize", fake_optimize)
    code = main(["-q", "optimize", "example:fashion-cnn", "--device", "pi4", "--emulate", "--eval", "x",
                 "--out", "o", "--ray", "auto"])
    assert code == 2 and seen["ray"] == "auto"


def test_a_bad_ray_address_is_refused_and_a_silent_one_answered_at_once() -> None:
    import socket

    from edgekit.optimize.distributed import _probe, check_address

    check_address("auto")
    check_address("10.0.0.2:6379")
    with pytest.raises(UsageError, match="--ray takes auto or HOST:PORT"):
        check_address("10.0.0.2")
    with socket.socket() as s:  # a port nobody listens on: ray.init would wait minutes there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailedError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _probe(f"127.0.0.1:{port}", "start it")
