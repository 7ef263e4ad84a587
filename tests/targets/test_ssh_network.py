"""SSHTarget over real, imperfect links (tests/fixtures/netns.py): a device in its own network
namespace behind a veth pair shaped with tbf, losing packets or cut by nftables, and a device
behind a delay proxy on 127.0.0.1. Every address is checked with ``ip route get`` first.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from edgekit.errors import ConnectionFailedError
from edgekit.targets.base import RunJob
from edgekit.targets.ssh import SSHTarget
from tests.fixtures.netns import DelayProxy, NetnsDevice, route_goes_through
from tests.targets.test_ssh import STUB_OK, stub_runner

pytestmark = pytest.mark.ssh

SLEEPY = """
import json, os, sys, time
time.sleep({seconds})
with open(os.path.join(sys.argv[-1], "result.json"), "w") as f:
    json.dump({{"schema_version": 1, "ok": True, "error": None, "notes": [], "slept": {seconds}}}, f)
"""


_WORKDIRS: list[str] = []


@pytest.fixture(autouse=True)
def _remove_workdirs(ssh_device) -> Iterator[None]:
    yield
    while _WORKDIRS:
        shutil.rmtree(ssh_device.remote_path(_WORKDIRS.pop()), ignore_errors=True)


def _target(ssh_device, device: NetnsDevice, tmp_path: Path, **overrides) -> SSHTarget:
    device.check_route()  # never connect anywhere but into our namespace
    known_hosts = tmp_path / f"known_hosts-{device.netns}"
    known_hosts.write_text(device.known_hosts_line())
    options = {"host": device.address(ssh_device.user), "known_hosts": known_hosts,
               "workdir": f"~/edgekit-net-{uuid.uuid4().hex[:8]}", "keepalive_s": 1, "connect_timeout": 3,
               **overrides}
    _WORKDIRS.append(options["workdir"])
    return ssh_device.target(**options)


def _payload(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"model-{size}.bin"
    path.write_bytes(os.urandom(size))
    return path


def test_route_check_refuses_what_is_not_ours() -> None:
    assert not route_goes_through("10.231.255.254", "ekh-none")  # would go out through the gateway
    assert not route_goes_through("8.8.8.8", "lo")


@pytest.mark.slow
def test_shaped_link_cold_then_warm(ssh_device, netns_factory, tmp_path: Path) -> None:
    device = netns_factory(shape={"rate": "8mbit"})
    payload = _payload(tmp_path, 1 << 20)
    runner = stub_runner(tmp_path, STUB_OK)
    job = RunJob(job={"schema_version": 1}, files={"model.bin": payload})
    with _target(ssh_device, device, tmp_path, runner=runner) as target:
        started = time.monotonic()
        cold = target.run(job, tmp_path / "a")
        cold_s = time.monotonic() - started
        workdir = target.workdir
    assert cold.bytes_pushed == payload.stat().st_size + runner.stat().st_size
    assert cold_s > 0.9  # 1 MiB at 8 Mbit/s: the shaping is real
    with _target(ssh_device, device, tmp_path, runner=runner, workdir=workdir) as target:  # the next deploy
        started = time.monotonic()
        warm = target.run(job, tmp_path / "b")
        warm_s = time.monotonic() - started
    assert warm.bytes_pushed == 0 and warm.transfer["files_cached"] == 2
    assert warm_s < cold_s / 2


@pytest.mark.slow
def test_lossy_link_still_delivers(ssh_device, netns_factory, tmp_path: Path) -> None:
    device = netns_factory(loss=3)
    payload = _payload(tmp_path, 400 * 1024)
    runner = stub_runner(tmp_path, STUB_OK)
    with _target(ssh_device, device, tmp_path, runner=runner, connect_timeout=10) as target:
        result = target.run(RunJob(job={"schema_version": 1}, files={"model.bin": payload}), tmp_path / "a")
    assert result.result["ok"] and "model.bin" in result.result["listing"]
    assert device.dropped_packets() > 0  # the loss rule did drop packets (TCP resent them)


def test_added_latency_through_a_delay_proxy(ssh_device, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, STUB_OK)
    with DelayProxy([ssh_device.port], one_way_ms=50) as proxy:
        port = proxy.ports[0]
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(ssh_device.host_key_line.split()[:2])}\n")
        _WORKDIRS.append(f"~/edgekit-net-{uuid.uuid4().hex[:8]}")
        target = ssh_device.target(host=f"{ssh_device.user}@127.0.0.1:{port}", known_hosts=known_hosts,
                                   runner=runner, workdir=_WORKDIRS[-1])
        started = time.monotonic()
        with target:
            connected = time.monotonic()
            target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
            before = time.monotonic()
            warm = target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "b")
            warm_s = time.monotonic() - before
    assert connected - started > 0.4  # TCP + key exchange + auth + SFTP: several round trips of 100 ms
    assert warm.bytes_pushed == 0
    assert 0.2 < warm_s < 1.5  # a warm run is a few round trips: the supervisor, then removing the run dir


@pytest.mark.slow
def test_link_cut_mid_run_then_restored(ssh_device, netns_factory, tmp_path: Path) -> None:
    device = netns_factory()
    runner = stub_runner(tmp_path, SLEEPY.format(seconds=3))
    target = _target(ssh_device, device, tmp_path, runner=runner, reconnect_s=20, connect_timeout=1,
                     keepalive_s=0.5)
    with target:
        target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "warm")  # cache the runner
        threading.Timer(0.5, device.cut).start()
        threading.Timer(4.0, device.restore).start()  # after the keep-alives gave up (0.5 s + 3 × 0.5 s)
        result = target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
        stats = target.stats()
        workdir = target.workdir
    assert result.result["slept"] == 3
    assert any("dropped during the run" in note for note in result.result["notes"])
    assert stats["reconnects"] == 1
    assert ssh_device.run_dirs(workdir) == []


@pytest.mark.slow
def test_brief_glitch_is_ridden_out(ssh_device, netns_factory, tmp_path: Path) -> None:
    device = netns_factory()
    runner = stub_runner(tmp_path, SLEEPY.format(seconds=2.5))
    with _target(ssh_device, device, tmp_path, runner=runner, keepalive_s=3) as target:
        target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "warm")
        threading.Timer(0.5, device.cut).start()
        threading.Timer(1.5, device.restore).start()  # back before TCP gives up: same connection
        result = target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
        assert target.stats()["connections"] == 1
    assert result.result["slept"] == 2.5


@pytest.mark.slow
def test_link_cut_mid_push_resumes_on_the_next_run(ssh_device, netns_factory, tmp_path: Path) -> None:
    device = netns_factory(shape={"rate": "8mbit"})
    payload = _payload(tmp_path, 3 << 20)
    runner = stub_runner(tmp_path, STUB_OK)
    job = RunJob(job={"schema_version": 1}, files={"model.bin": payload})
    with _target(ssh_device, device, tmp_path, runner=runner) as target:
        target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "warm")  # cache the runner
        workdir = target.workdir
        threading.Timer(1.2, device.cut).start()
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError) as caught:
            target.run(job, tmp_path / "a")
        assert time.monotonic() - started < 15
    device.restore()
    message = caught.value.one_line()
    assert "while pushing 'model.bin'" in message and "of 3.0 MiB sent" in message and "resumes" in message
    with _target(ssh_device, device, tmp_path, runner=runner, workdir=workdir) as target:
        result = target.run(job, tmp_path / "b")
    assert result.result["ok"]
    assert result.transfer["bytes_resumed"] > 0
    assert result.bytes_pushed == payload.stat().st_size - result.transfer["bytes_resumed"]
    assert ssh_device.run_dirs(workdir) == []


def test_connect_through_a_dead_link_times_out(ssh_device, netns_factory, tmp_path: Path) -> None:
    device = netns_factory()
    device.cut()
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match=r"timed out after 1 s") as caught:
        _target(ssh_device, device, tmp_path, connect_timeout=1).open()
    assert time.monotonic() - started < 3
    assert "--connect-timeout" in caught.value.one_line()
