"""SSHTarget against a real OpenSSH server on 127.0.0.1 (tests/fixtures/sshd.py).

Parsing and known_hosts tests need no server; every other test is marked ``ssh``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import textwrap
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import paramiko
import pytest

from edgekit.errors import (
    AuthFailedError,
    ConnectionFailedError,
    HostKeyChangedError,
    HostKeyUnknownError,
    RemoteDiskFullError,
    RemoteOutOfMemoryError,
    RemoteRuntimeMissingError,
    RunnerFailedError,
    UsageError,
)
from edgekit.resources import runner_path
from edgekit.targets.base import RunJob
from edgekit.targets.hostkeys import KnownHosts, fingerprint
from edgekit.targets.ssh import SSHTarget
from edgekit.targets.sshconfig import Address, parse_address, resolve_endpoint
from tests.fixtures.sshd import make_keypair

# ---------------------------------------------------------------------------- helpers


def tiny_onnx(path: Path) -> Path:
    """y = relu(x @ W + b), x: [1, 4] float32 -> y: [1, 3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def benchmark_job(model_name: str, **extra: object) -> dict:
    job = {
        "schema_version": 1, "mode": "benchmark", "model": model_name, "format": "onnx",
        "runtimes": ["onnxruntime"], "providers": ["CPUExecutionProvider"], "threads": 1,
        "warmup": 1, "runs": 3, "min_seconds": 0, "inputs": None, "save_outputs": None,
    }
    job.update(extra)
    return job


STUB_OK = """
import json, os, stat, sys
d = sys.argv[-1]
st = os.stat(d)
result = {"schema_version": 1, "ok": True, "error": None, "argv": sys.argv[1:],
          "mode_bits": oct(stat.S_IMODE(st.st_mode)), "cwd": os.getcwd(),
          "listing": sorted(os.listdir(d))}
if os.path.exists(os.path.join(d, "job.json")):
    result["job"] = json.load(open(os.path.join(d, "job.json")))
with open(os.path.join(d, "result.json"), "w") as f:
    json.dump(result, f)
"""


def stub_runner(tmp_path: Path, body: str) -> Path:
    path = tmp_path / f"stub_runner_{uuid.uuid4().hex[:6]}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _process_state(pid: int) -> str | None:
    """The state letter of a process (``R``, ``S``, ``Z``...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def stub_job(tmp_path: Path) -> RunJob:
    return RunJob(job={"schema_version": 1, "mode": "benchmark"}, files={})


# ---------------------------------------------------------------------------- no server


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pi@10.0.0.7:2222", Address("10.0.0.7", "pi", 2222)),
        ("10.0.0.7", Address("10.0.0.7")),
        ("raspberry", Address("raspberry")),
        ("me@[fe80::1]:22", Address("fe80::1", "me", 22)),
        ("[::1]:2200", Address("::1", None, 2200)),
        ("::1", Address("::1")),
        ("a@b@host:1", Address("host", "a@b", 1)),
        ("ssh://pi@dev:23", Address("dev", "pi", 23)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["pi@host:0", "host:99999", "host:ab", "[::1", "pi@", "two words"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def test_resolve_precedence_and_proxyjump(tmp_path: Path) -> None:
    config_path = tmp_path / "config"
    config_path.write_text(textwrap.dedent("""
        Host dev
          HostName 10.1.2.3
          User cfguser
          Port 2201
          IdentityFile ~/keys/dev_key
          ProxyJump bastion,inner
        Host bastion
          HostName 10.9.9.9
          User jumper
          ProxyJump outer
        Host inner
          HostName 10.8.8.8
          ProxyJump ignored-for-later-hops
        Host outer
          HostName 10.7.7.7
          Port 2022
    """))
    config = paramiko.SSHConfig.from_path(str(config_path))
    endpoint = resolve_endpoint("dev", config, key_filenames=[Path("/k/explicit")])
    assert (endpoint.host, endpoint.port, endpoint.user) == ("10.1.2.3", 2201, "cfguser")
    assert endpoint.identity_files == [Path("/k/explicit"), Path(os.path.expanduser("~/keys/dev_key"))]
    assert [(hop.host, hop.port) for hop in endpoint.jumps] == [
        ("10.7.7.7", 2022), ("10.9.9.9", 22), ("10.8.8.8", 22)]
    assert endpoint.jumps[1].user == "jumper"
    # address beats config, explicit beats address; defaults only when nothing else says
    assert resolve_endpoint("me@dev:2300", config).user == "me"
    assert resolve_endpoint("me@dev:2300", config, port=2400).port == 2400
    plain = resolve_endpoint("10.5.5.5", config, default_user="pi", default_port=2022)
    assert (plain.user, plain.port, plain.jumps) == ("pi", 2022, [])


def test_proxycommand_is_refused(tmp_path: Path) -> None:
    config_path = tmp_path / "config"
    config_path.write_text("Host dev\n  ProxyCommand nc %h %p\n")
    with pytest.raises(UsageError, match="ProxyCommand"):
        resolve_endpoint("dev", paramiko.SSHConfig.from_path(str(config_path)))


def test_known_hosts_add_is_atomic_and_keeps_lines(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("# my comment\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDu4v3ODtCeqMlEXK3o9hQdXfTjQ2ePo4PfKJfVwAPzw")
    os.chmod(path, 0o644)
    key = paramiko.Ed25519Key.from_private_key_file(str(_new_key(tmp_path)))
    known = KnownHosts(path)
    known.check("10.0.0.1", 2222, key, accept_new=True, what="x")
    text = path.read_text()
    assert text.startswith("# my comment\nother.example ssh-ed25519 ")
    assert text.endswith(f"[10.0.0.1]:2222 ssh-ed25519 {key.get_base64()}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".known_hosts")] == []
    KnownHosts(path).check("10.0.0.1", 2222, key, accept_new=False, what="x")  # now known


def _new_key(folder: Path) -> Path:
    path = folder / f"key_{uuid.uuid4().hex[:6]}"
    make_keypair(path)
    return path


def test_dns_failure_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    target = SSHTarget("pi@no-such-device.invalid:2222", ssh_config=os.devnull,
                       known_hosts=tmp_path / "kh", use_agent=False)
    with pytest.raises(ConnectionFailedError, match=r"cannot resolve .*no-such-device\.invalid:2222"):
        target.open()


# ---------------------------------------------------------------------------- real sshd

@pytest.fixture
def workdir(ssh_device) -> Iterator[str]:
    """A fresh ``~/edgekit-tests-*`` workdir on the device, removed after the test."""
    name = f"~/edgekit-tests-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(ssh_device.remote_path(name), ignore_errors=True)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    tiny_onnx(folder / "tiny model.onnx")
    return folder


@pytest.mark.ssh
def test_real_runner_end_to_end(ssh_device, model_dir: Path, tmp_path: Path) -> None:
    ssh_device.require_runtime()
    assert runner_path().is_file()
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    job = RunJob(
        job=benchmark_job("tiny model.onnx", inputs="inputs.npz", save_outputs="outputs.npz"),
        files={"tiny model.onnx": model_dir / "tiny model.onnx", "inputs.npz": tmp_path / "inputs.npz"},
        fetch=["outputs.npz"],
    )
    accepted_before = ssh_device.sshd.log_text().count("Accepted publickey")
    with ssh_device.target() as target:
        first = target.run(job, tmp_path / "out1")
        second = target.run(job, tmp_path / "out2")
        info = target.describe()
    assert ssh_device.sshd.log_text().count("Accepted publickey") == accepted_before + 1  # one connection
    for result in (first, second):
        assert result.result["ok"] is True
        assert result.result["runtime"]["name"] == "onnxruntime"
        assert len(result.result["samples_ms"]) >= 3
        assert result.wall_s > 0
    assert first.result["device"]["python"].startswith("3.")
    import onnxruntime as ort

    expected = ort.InferenceSession(str(model_dir / "tiny model.onnx")).run(None, {"x": x})[0]
    with np.load(first.files["outputs.npz"], allow_pickle=False) as outputs:
        np.testing.assert_allclose(outputs["y"], expected, rtol=1e-5, atol=1e-6)
    assert ssh_device.run_dirs() == []  # run directories are removed
    assert info.kind == "ssh"
    assert info.address == ssh_device.address
    assert info.reproduced == ["the device itself"]


@pytest.mark.ssh
def test_runner_reported_error_is_typed_and_cleaned(ssh_device, workdir: str, tmp_path: Path) -> None:
    ssh_device.require_runtime()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with ssh_device.target(workdir=workdir) as target:
        with pytest.raises(RunnerFailedError) as caught:
            target.run(RunJob(job=benchmark_job("bad.onnx"), files={"bad.onnx": bad}), tmp_path / "out")
    assert caught.value.kind == "model_load"
    assert ssh_device.run_dirs(workdir) == []


@pytest.mark.ssh
def test_probe_returns_device_facts(ssh_device) -> None:
    ssh_device.require_runtime()
    with ssh_device.target() as target:
        facts = target.probe()
    assert facts["device"]["machine"]
    assert facts["runtimes"]["onnxruntime"]["available"] is True
    assert ssh_device.run_dirs() == []


@pytest.mark.ssh
def test_run_dir_is_private_and_files_arrive(ssh_device, workdir: str, tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * 1000)
    runner = stub_runner(tmp_path, STUB_OK)
    job = RunJob(job={"schema_version": 1, "hello": "world"}, files={"sub/dir/payload.bin": payload})
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        result = target.run(job, tmp_path / "out").result
    assert result["mode_bits"] == "0o700"
    assert result["job"] == {"schema_version": 1, "hello": "world"}
    assert {"sub", "job.json", "edgekit_runner.py"} <= set(result["listing"])
    run_dir = result["argv"][-1]
    assert os.path.basename(run_dir).startswith("edgekit-run-")
    assert run_dir.startswith(str(ssh_device.home) + "/edgekit-tests-")  # ~ is the SFTP home
    assert result["cwd"] == run_dir
    assert ssh_device.run_dirs(workdir) == []


@pytest.mark.ssh
def test_hostile_paths_are_literal(ssh_device, workdir: str, tmp_path: Path) -> None:
    marker = Path(f"/tmp/edgekit-pwned-{uuid.uuid4().hex[:8]}")
    nasty = f"we ird 'q\" ; $(touch {marker}) `touch {marker}` \n line & | > <"
    base, workdir = workdir, f"{workdir}/{nasty}"
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"1")
    runner = stub_runner(tmp_path, STUB_OK)
    name = nasty.replace("/", "_") + ".bin"  # a file name (with "/" it would be a path)
    job = RunJob(job={"schema_version": 1}, files={name: payload}, fetch=[name])
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        result = target.run(job, tmp_path / "out")
    assert not marker.exists()
    assert result.result["argv"][-1].startswith(f"{ssh_device.remote_path(base)}/{nasty}/edgekit-run-")
    assert name in result.result["listing"]
    assert result.files[name].read_bytes() == b"1"
    assert ssh_device.remote_path(workdir).is_dir()
    assert ssh_device.run_dirs(workdir) == []
    # the python command is split into words and each word quoted: no shell in it either
    with ssh_device.target(runner=runner, python=f"python3; touch {marker}") as target:
        with pytest.raises(RemoteRuntimeMissingError):
            target.run(job, tmp_path / "out2")
    assert not marker.exists()


@pytest.mark.ssh
def test_unknown_host_key_then_accept_new(ssh_device, tmp_path: Path) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"  # missing folder and file
    with pytest.raises(HostKeyUnknownError) as caught:
        ssh_device.target(known_hosts=known_hosts).open()
    error = caught.value
    assert f"ssh-ed25519 {fingerprint(ssh_device.host_key)}" in str(error)
    assert "--accept-new-host-key" in error.hint
    assert not known_hosts.exists()
    with ssh_device.target(known_hosts=known_hosts, accept_new_host_key=True) as target:
        assert target.exec(["true"])[0] == 0
    assert known_hosts.read_text() == ssh_device.sshd.known_hosts_line()
    with ssh_device.target(known_hosts=known_hosts) as target:  # known now: no flag needed
        assert target.exec(["echo", "hi"])[1] == "hi\n"


@pytest.mark.ssh
def test_changed_host_key_is_refused_even_with_accept_new(ssh_device, tmp_path: Path) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(_new_key(tmp_path)))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{ssh_device.host}]:{ssh_device.port} ssh-ed25519 {other.get_base64()}\n")
    before = known_hosts.read_text()
    for accept in (False, True):
        with pytest.raises(HostKeyChangedError) as caught:
            ssh_device.target(known_hosts=known_hosts, accept_new_host_key=accept).open()
        assert fingerprint(ssh_device.host_key) in str(caught.value)
        assert fingerprint(other) in str(caught.value)
    assert known_hosts.read_text() == before


@pytest.mark.ssh
def test_connection_refused_is_fast_and_clear(ssh_device) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match=rf"127\.0\.0\.1:{port} refused"):
        ssh_device.target(host=f"{ssh_device.user}@127.0.0.1:{port}").open()
    assert time.monotonic() - started < 2


@pytest.mark.ssh
def test_silent_server_times_out(ssh_device) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts the TCP connection, never says a word
        port = server.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError, match=rf"127\.0\.0\.1:{port} timed out"):
            ssh_device.target(host=f"u@127.0.0.1:{port}", connect_timeout=0.5).open()
        assert time.monotonic() - started < 5


@pytest.mark.ssh
def test_bad_key_fails_auth_without_leaking(ssh_device, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stranger = _new_key(tmp_path)
    secret = "hunter2-not-logged"
    caplog.set_level("DEBUG")
    with pytest.raises(AuthFailedError) as caught:
        ssh_device.target(key_filename=stranger, password=secret).open()
    text = caught.value.one_line()
    assert str(stranger) in text and "password" in text
    assert secret not in text and secret not in caplog.text
    private_lines = stranger.read_text().splitlines()[1:-1]
    assert not any(line in text for line in private_lines)


@pytest.mark.ssh
def test_no_credential_at_all(ssh_device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* there
    with pytest.raises(AuthFailedError, match="no credential"):
        ssh_device.target(key_filename=None).open()


@pytest.mark.ssh
def test_missing_python(ssh_device, workdir: str, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, STUB_OK)
    with ssh_device.target(runner=runner, python="python3-no-such", workdir=workdir) as target:
        with pytest.raises(RemoteRuntimeMissingError, match="python3-no-such not found on the device"):
            target.run(stub_job(tmp_path), tmp_path / "out")
    assert ssh_device.run_dirs(workdir) == []


@pytest.mark.ssh
def test_runner_without_result(ssh_device, workdir: str, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, """
        import sys
        print("some progress")
        sys.stderr.write("Traceback: the runner blew up\\n")
        sys.exit(3)
    """)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        with pytest.raises(RunnerFailedError, match=r"(?s)exited with status 3.*the runner blew up") as caught:
            target.run(stub_job(tmp_path), tmp_path / "out")
    assert "@@edgekit" not in str(caught.value)
    assert ssh_device.run_dirs(workdir) == []


@pytest.mark.ssh
def test_sigkill_without_oom_is_not_called_oom(ssh_device, workdir: str, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        with pytest.raises(RunnerFailedError, match="killed by SIGKILL"):
            target.run(stub_job(tmp_path), tmp_path / "out")
    assert ssh_device.run_dirs(workdir) == []


@pytest.mark.ssh
@pytest.mark.parametrize("kind", ["result", "stderr"])
def test_disk_full_and_runner_oom_kinds(ssh_device, tmp_path: Path, kind: str) -> None:
    if kind == "result":  # the runner caught a MemoryError and said so
        body = """
            import json, os, sys
            json.dump({"schema_version": 1, "ok": False, "error": {"kind": "out_of_memory",
                       "message": "MemoryError: "}}, open(os.path.join(sys.argv[-1], "result.json"), "w"))
            sys.exit(1)
        """
        expected, match = RemoteOutOfMemoryError, "ran out of memory on the device .* has 512 MiB"
    else:
        body = """
            import errno, os
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        """
        expected, match = RemoteDiskFullError, "ran out of disk space"
    with ssh_device.target(runner=stub_runner(tmp_path, body), memory_mib=512) as target:
        with pytest.raises(expected, match=match):
            target.run(stub_job(tmp_path), tmp_path / "out")


@pytest.mark.ssh
def test_command_timeout_stops_the_runner(ssh_device, workdir: str, tmp_path: Path) -> None:
    pid_file = Path(f"/tmp/edgekit-test-pid-{uuid.uuid4().hex}")
    runner = stub_runner(tmp_path, f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                   "time.sleep(60)\n")
    started = time.monotonic()
    with ssh_device.target(runner=runner, workdir=workdir, command_timeout=1.5) as target:
        with pytest.raises(ConnectionFailedError, match="did not finish within 1.5 s"):
            target.run(stub_job(tmp_path), tmp_path / "out")
        assert target.exec(["true"])[0] == 0  # the connection is still usable
    assert time.monotonic() - started < 10
    assert ssh_device.run_dirs(workdir) == []
    pid = int(pid_file.read_text())
    pid_file.unlink()
    assert _process_state(pid) in (None, "Z")  # killed, not left running (a zombie waits for init)


@pytest.mark.ssh
def test_reconnects_after_the_connection_drops(ssh_device, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, STUB_OK)
    with ssh_device.target(runner=runner) as target:
        target.run(stub_job(tmp_path), tmp_path / "a")
        target.connection.transport.close()  # the network went away between two runs
        assert target.run(stub_job(tmp_path), tmp_path / "b").result["ok"]
    assert ssh_device.run_dirs() == []


@pytest.mark.ssh
def test_ssh_config_alias(ssh_device, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(textwrap.dedent(f"""
        Host my-device
          HostName {ssh_device.host}
          Port {ssh_device.port}
          User {ssh_device.user}
          IdentityFile {ssh_device.client_key}
          IdentitiesOnly yes
    """))
    target = SSHTarget("my-device", ssh_config=config, known_hosts=ssh_device.known_hosts,
                       python=ssh_device.python, runner=stub_runner(tmp_path, STUB_OK))
    assert target.describe().address == ssh_device.address
    with target:
        assert target.run(stub_job(tmp_path), tmp_path / "out").result["ok"]


@pytest.mark.ssh
def test_proxyjump_through_a_second_sshd(ssh_device, sshd_factory, tmp_path: Path) -> None:
    jump = sshd_factory(name=f"jump-{uuid.uuid4().hex[:6]}", extra_config="LogLevel DEBUG1")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_device.sshd.known_hosts_line() + jump.known_hosts_line())
    config = tmp_path / "config"
    config.write_text(textwrap.dedent(f"""
        Host jumphost
          HostName {jump.host}
          Port {jump.port}
          User {ssh_device.user}
          IdentityFile {ssh_device.client_key}
        Host behind
          HostName {ssh_device.host}
          Port {ssh_device.port}
          User {ssh_device.user}
          IdentityFile {ssh_device.client_key}
          ProxyJump jumphost
    """))
    options = dict(ssh_config=config, known_hosts=known_hosts, python=ssh_device.python,
                   runner=stub_runner(tmp_path, STUB_OK), use_agent=False)
    target = SSHTarget("behind", **options)
    assert [hop.port for hop in target.endpoint.jumps] == [jump.port]
    with target:
        assert target.run(stub_job(tmp_path), tmp_path / "out").result["ok"]
        assert "jump" in target.describe().not_reproduced[0]
    assert "Accepted publickey" in jump.log_text()  # we logged into the jump host ...
    assert f"to {ssh_device.host} port {ssh_device.port}" in jump.log_text()  # ... and forwarded
    # ... and nothing works when the jump host is down
    jump.stop()
    with pytest.raises(ConnectionFailedError, match=rf"127\.0\.0\.1:{jump.port} refused"):
        SSHTarget("behind", **options).open()


@pytest.fixture
def memory_limited_sshd(ssh_device, sshd_factory):
    """An sshd in a cgroup v1 memory group limited to 96 MiB (root only)."""
    group = Path(f"/sys/fs/cgroup/memory/edgekit-test-{uuid.uuid4().hex[:8]}")
    if not Path("/sys/fs/cgroup/memory/cgroup.procs").exists():
        pytest.skip("no cgroup v1 memory controller on this machine")
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup: {exc}")
    server = None
    try:
        (group / "memory.limit_in_bytes").write_text(str(96 << 20))
        setenv = [line for line in ssh_device.sshd.config_path.read_text().splitlines()
                  if line.startswith("SetEnv")]
        server = sshd_factory(name=f"oom-{uuid.uuid4().hex[:6]}", extra_config="\n".join(setenv))
        (group / "cgroup.procs").write_text(str(server.proc.pid))
        yield server
    finally:
        if server is not None:
            server.stop()
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.ssh
def test_oom_kill_is_reported_as_out_of_memory(ssh_device, workdir: str, memory_limited_sshd, tmp_path: Path) -> None:
    server = memory_limited_sshd
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    runner = stub_runner(tmp_path, "blocks = []\nwhile True:\n    blocks.append(b'x' * (16 << 20))\n")
    target = ssh_device.target(host=f"{ssh_device.user}@{server.host}:{server.port}",
                               known_hosts=known_hosts, runner=runner, workdir=workdir,
                               memory_mib=512, profile_name="tiny-board")
    with target:
        with pytest.raises(RemoteOutOfMemoryError) as caught:
            target.run(stub_job(tmp_path), tmp_path / "out")
    message = str(caught.value)
    assert "ran out of memory on the device" in message
    assert "killed by the kernel OOM killer" in message
    assert "(profile tiny-board) has 512 MiB" in message
    peak = int(re.search(r"peak so far (\d+) MiB", message).group(1))  # wait4 saw the killed runner's peak
    assert 60 <= peak <= 100
    assert "cgroup was limited to 96 MiB" in message
    assert ssh_device.run_dirs(workdir) == []


@pytest.fixture
def tiny_filesystem(ssh_device):
    """A 128 KiB tmpfs owned by the device user (root only)."""
    import subprocess

    folder = Path(f"/tmp/edgekit-full-{uuid.uuid4().hex[:8]}")
    folder.mkdir(mode=0o755)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0755", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        os.chown(folder, ssh_device.account.pw_uid, ssh_device.account.pw_gid)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


@pytest.mark.ssh
def test_disk_full_while_pushing(ssh_device, tiny_filesystem: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.onnx"
    big.write_bytes(os.urandom(512 * 1024))
    runner = stub_runner(tmp_path, STUB_OK)
    with ssh_device.target(runner=runner, workdir=str(tiny_filesystem / "work")) as target:
        with pytest.raises(RemoteDiskFullError, match=r"disk is full: 0 MiB free .* needs 0\.5 MiB"):
            target.run(RunJob(job={"schema_version": 1}, files={"big.onnx": big}), tmp_path / "out")
        assert target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "out").result["ok"]
    assert [p.name for p in (tiny_filesystem / "work").iterdir()] == ["cache"]  # no run directory left
    assert [p.name for p in (tiny_filesystem / "work" / "cache").iterdir() if ".part" in p.name] == []


@pytest.mark.ssh
def test_python_under_home_is_expanded_without_a_shell(ssh_device, tmp_path: Path) -> None:
    link = f"edgekit-py-{uuid.uuid4().hex[:6]}"
    assert ssh_device.run_as_user(["ln", "-s", "/usr/bin/python3", link]).returncode == 0
    try:
        with ssh_device.target(runner=stub_runner(tmp_path, STUB_OK), python=f"~/{link} -B") as target:
            result = target.run(stub_job(tmp_path), tmp_path / "out").result
        assert result["ok"]
    finally:
        (ssh_device.home / link).unlink()


@pytest.fixture
def ssh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private ssh-agent (SSH_AUTH_SOCK points at it for the test); stopped afterwards."""
    import shutil
    import subprocess

    if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
        pytest.skip("ssh-agent/ssh-add are not installed (openssh-client)")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        agent.terminate()
        agent.wait(timeout=5)


@pytest.mark.ssh
def test_agent_key_is_used(ssh_device, ssh_agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* : only the agent can log in
    stranger = _new_key(tmp_path)
    for key in (stranger, ssh_device.client_key):  # a wrong key first: the next one is tried
        subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(ssh_agent)})
    with ssh_device.target(key_filename=None, use_agent=True) as target:
        assert target.exec(["whoami"])[1].strip() == ssh_device.user
    # IdentitiesOnly in the config turns the agent off
    config = tmp_path / "config"
    config.write_text(f"Host {ssh_device.host}\n  IdentitiesOnly yes\n")
    with pytest.raises(AuthFailedError):
        ssh_device.target(key_filename=None, use_agent=True, ssh_config=config).open()
