"""`--host edgekit-<name>`: the alias of an emulated device, resolved from the ssh_config that
``edgekit emulator`` writes (user, port, key, and the known_hosts file edgekit wrote)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import emulator
from edgekit.errors import HostKeyUnknownError, UsageError
from edgekit.outputs import write_json_atomic
from edgekit.targets.sshconfig import edgekit_host_blocks, load_ssh_config, resolve_endpoint


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """An empty home (no ~/.ssh/config) and an emulator cache of this test's own."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(emulator.CACHE_ENV, str(tmp_path / "emu"))
    return home


def fake_state(name: str, port: int, user: str, key: Path, known_hosts: Path, host: str = "127.0.0.1"):
    return emulator.EmulatorState(
        name=name, device="pi4", image_key="k", base_rootfs="/b", instance_dir="/i", mode="overlay", pid=0,
        port=port, user=user, key_file=str(key), known_hosts=str(known_hosts), ssh_config="/i/ssh_config",
        alias=f"edgekit-{name}", log="/i/sshd.log", started_at=0.0, machine="aarch64", host=host,
    )


def write_include(*states, extra: str = "") -> Path:
    """The emulator's include file, as ``_write_include_file`` writes it for running devices."""
    path = emulator.include_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by edgekit\n" + extra + "\n".join(emulator._host_config_entry(s) for s in states))
    return path


def test_the_alias_resolves_from_edgekits_file(homes, tmp_path):
    state = fake_state("pi4", 40022, "pi", tmp_path / "id_ed25519", tmp_path / "known_hosts")
    write_include(state)
    endpoint = resolve_endpoint("edgekit-pi4", load_ssh_config(None))
    assert (endpoint.host, endpoint.port, endpoint.user) == ("127.0.0.1", 40022, "pi")
    assert endpoint.identity_files == [tmp_path / "id_ed25519"] and endpoint.identities_only
    assert endpoint.known_hosts == tmp_path / "known_hosts"  # the file edgekit wrote with the host key


def test_edgekits_blocks_win_over_a_users_host_star(homes, tmp_path):
    (homes / ".ssh" / "config").write_text("Host *\n  User alice\n  Port 2200\n  IdentityFile ~/.ssh/id_rsa\n"
                                           "Host other\n  HostName 10.0.0.9\n")
    write_include(fake_state("pi4", 40022, "pi", tmp_path / "k", tmp_path / "kh"))
    config = load_ssh_config(None)
    endpoint = resolve_endpoint("edgekit-pi4", config)
    assert (endpoint.user, endpoint.port) == ("pi", 40022)
    assert endpoint.identity_files[0] == tmp_path / "k"
    other = resolve_endpoint("other", config)  # the user's own hosts are untouched
    assert (other.host, other.user, other.port) == ("10.0.0.9", "alice", 2200)


def test_only_edgekit_aliases_are_taken_from_its_file(homes, tmp_path):
    hostile = "Host *\n  User mallory\n  ProxyJump evil\nMatch all\n  Port 1\nHost pi edgekit-x\n  Port 2\n"
    write_include(fake_state("pi4", 40022, "pi", tmp_path / "k", tmp_path / "kh"), extra=hostile)
    assert "mallory" not in edgekit_host_blocks(emulator.include_file().read_text())
    config = load_ssh_config(None)
    plain = resolve_endpoint("raspberrypi.local", config)
    assert plain.port == 22 and plain.user != "mallory" and not plain.jumps
    assert resolve_endpoint("edgekit-x", config).port == 22  # its block also named "pi": dropped


def test_an_explicit_config_file_is_read_alone(homes, tmp_path):
    write_include(fake_state("pi4", 40022, "pi", tmp_path / "k", tmp_path / "kh"))
    empty = tmp_path / "config"
    empty.write_text("")
    assert resolve_endpoint("edgekit-pi4", load_ssh_config(empty)).port == 22
    assert resolve_endpoint("edgekit-pi4", load_ssh_config(empty, edgekit_hosts=True)).port == 40022


def test_a_broken_edgekit_file_does_not_stop_other_hosts(homes, tmp_path):
    path = emulator.include_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe not text")
    assert resolve_endpoint("pi@10.0.0.9", load_ssh_config(None)).host == "10.0.0.9"


def test_a_stopped_emulator_is_named_not_looked_up_in_dns(homes, tmp_path):
    state = fake_state("pi4", 40022, "pi", tmp_path / "k", tmp_path / "kh")
    write_json_atomic(emulator._state_path("pi4"), state.to_dict())  # known, pid 0: not running
    with pytest.raises(UsageError) as info:
        resolve_endpoint("edgekit-pi4", load_ssh_config(None))
    assert "'pi4' (edgekit-pi4) is not running" in info.value.message
    assert "edgekit emulator start pi4 --name pi4" in info.value.hint


@pytest.mark.ssh
def test_deploy_flags_shrink_to_the_alias_over_real_sshd(ssh_device, homes, tmp_path):
    """A real sshd stands in for the emulated device: ``--host edgekit-fake`` alone connects,
    as the right user, with the key and the host key edgekit recorded, and nothing is asked."""
    from edgekit.targets.ssh import SSHTarget

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_device.sshd.known_hosts_line())
    write_include(fake_state("fake", ssh_device.port, ssh_device.user, ssh_device.client_key, known_hosts))
    before = known_hosts.read_text()
    with SSHTarget("edgekit-fake", python=ssh_device.python, use_agent=False, connect_timeout=5) as target:
        status, out, _err = target.exec(["id", "-un"])
        assert (status, out.strip()) == (0, ssh_device.user)
        assert target.address == ssh_device.address
        assert target.known_hosts_path == known_hosts
    assert known_hosts.read_text() == before  # trusted because edgekit wrote it, nothing added

    # a known_hosts without the device's key: refused, never accepted on the way
    known_hosts.write_text("")
    with pytest.raises(HostKeyUnknownError):
        SSHTarget("edgekit-fake", python=ssh_device.python, use_agent=False, connect_timeout=5).open()
    assert known_hosts.read_text() == ""
