"""The target registry, the SSH options object and the device-shell interface (no device needed)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from edgekit.devices import get as get_profile
from edgekit.errors import RemoteRuntimeMissingError, UsageError
from edgekit.report.text import _target_line
from edgekit.targets import DeviceShell, SSHOptions, TargetInfo, create_target, registry
from edgekit.targets.base import Target
from edgekit.targets.local import LocalTarget
from edgekit.targets.ssh import SSHTarget


class _ToyTarget(Target):
    """A third target, as a plug-in would add it: a module with ``from_profile``, one registry line."""

    def __init__(self, address: str) -> None:
        self.address = address

    def open(self) -> None:
        pass

    def run(self, job, local_dir):  # noqa: ANN001, ANN201 - never called here
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> TargetInfo:
        return TargetInfo(kind="toy", address=self.address, representative_latency=False)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("toy_target")
    module.from_profile = lambda profile, address, options, progress=None: _ToyTarget(address)  # type: ignore[attr-defined]
    module.check = lambda address: None if address != "toy:bad" else (_ for _ in ()).throw(UsageError("bad toy"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "toy_target", module)
    toy = registry.TargetKind("toy", "toy_target:from_profile", scheme="toy", check="toy_target:check",
                              where="toy device {address}", representative_latency=False)
    monkeypatch.setattr(registry, "TARGETS", (*registry.TARGETS, toy))


def test_emulate_picks_this_host_and_an_address_picks_ssh() -> None:
    profile = get_profile("pi4")
    local = create_target(profile, emulate=True)
    assert isinstance(local, LocalTarget) and local.cores == profile.cpu.cores
    ssh = create_target(profile, host="pi@10.0.0.9:2200", ssh={"ssh_config": os.devnull, "connect_timeout": 3})
    assert isinstance(ssh, SSHTarget) and ssh.address == "pi@10.0.0.9:2200"
    # the profile's defaults, under the options given
    assert (ssh.python, ssh.workdir, ssh.options.connect_timeout) == (profile.ssh.python, profile.ssh.workdir, 3.0)
    with pytest.raises(UsageError):
        create_target(profile)  # neither --emulate nor an address


def test_a_new_target_is_one_registry_line(toy_registered: None) -> None:
    target = create_target(get_profile("pi4"), host="toy:serial-1")
    assert isinstance(target, _ToyTarget) and target.address == "toy:serial-1"
    registry.check_address("toy:ok")
    with pytest.raises(UsageError, match="bad toy"):
        registry.check_address("toy:bad")
    # reports name it and flag its latency from the same entry
    assert registry.where_text("toy", "toy:serial-1", []) == "toy device toy:serial-1"
    assert registry.representative_kind("toy") is False
    assert registry.representative_kind("ssh") is True


def test_reports_name_the_target_as_before() -> None:
    summary = types.SimpleNamespace(target=types.SimpleNamespace(kind="emulated", address="localhost",
                                                                 reproduced=["2 of 4 cores"]))
    assert _target_line(summary) == "(emulated on this host: 2 of 4 cores)"  # type: ignore[arg-type]
    summary.target = types.SimpleNamespace(kind="ssh", address="pi@h:22", reproduced=["the device itself"])
    assert _target_line(summary) == "(ssh pi@h:22)"  # type: ignore[arg-type]
    summary.target = types.SimpleNamespace(kind="unknown-kind", address="x", reproduced=[])
    assert _target_line(summary) == "(unknown-kind x)"  # type: ignore[arg-type]


def test_ssh_options_layer_and_refuse_typos() -> None:
    fleet = SSHOptions.coerce({"python": "/opt/py", "connect_timeout": 4, "workdir": None})
    host = fleet.merged({"workdir": "/data/edgekit", "python": None})
    assert (host.python, host.workdir, host.connect_timeout) == ("/opt/py", "/data/edgekit", 4)
    assert fleet.workdir is None  # frozen: merging made a new object
    with pytest.raises(AttributeError):
        fleet.python = "other"  # type: ignore[misc]
    with pytest.raises(UsageError, match="pyhton"):
        SSHOptions.from_mapping({"pyhton": "python3"})
    assert "s3cret" not in repr(SSHOptions(password="s3cret"))
    assert SSHOptions(key_filename="~/k").key_files() == [Path(os.path.expanduser("~/k"))]
    with pytest.raises(UsageError, match="connect timeout"):
        SSHOptions(connect_timeout=0).resolved()


def test_the_ssh_target_is_a_device_shell_and_the_local_one_is_not() -> None:
    target = SSHTarget("pi@10.0.0.9", ssh_config=os.devnull)
    assert isinstance(target, DeviceShell)
    assert not isinstance(LocalTarget("pi"), DeviceShell)
    with pytest.raises(UsageError, match="python command is empty"):
        SSHTarget("pi@10.0.0.9", SSHOptions(python=""), ssh_config=os.devnull)


@pytest.mark.ssh
def test_provision_and_doctor_work_through_the_device_shell(ssh_device, tmp_path: Path) -> None:
    """What provision needs (commands, files both ways, a probe with another python) over a real sshd."""
    ssh_device.require_runtime()
    wheel = tmp_path / "tool-1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * 300)
    with ssh_device.target() as target:
        status, staging, _err = target.exec(["mktemp", "-d"])
        staging = staging.strip()
        assert status == 0 and staging.startswith("/")
        try:
            target.put_file(wheel, f"{staging}/{wheel.name}")
            target.write_file(f"{staging}/manifest.json", b'{"packages": []}')
            assert target.read_file(f"{staging}/{wheel.name}") == wheel.read_bytes()
            assert target.read_file(f"{staging}/manifest.json") == b'{"packages": []}'
            assert target.read_file(f"{staging}/missing.json") is None
            python = target.python
            # provision probes with its own python command (one that sets PYTHONPATH); the target's stays
            facts = target.probe(f"env EDGEKIT_PROBED=1 {python}")
            assert facts["runtimes"]["onnxruntime"]["available"] is True
            with pytest.raises(RemoteRuntimeMissingError, match="python3-no-such not found"):
                target.probe("python3-no-such")
            assert target.python == python and target.probe()["device"]["machine"]
        finally:
            target.exec(["rm", "-rf", "--", staging])
