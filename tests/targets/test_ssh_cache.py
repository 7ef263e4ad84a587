"""The device-side content-addressed cache and the supervisor, against a real OpenSSH server.

What is checked: a cold run pushes each file once and a warm run (same or new connection)
pushes nothing; every transfer and every cache entry a connection uses is verified by sha256
on the device (a corrupted entry or transfer is found and pushed again); interrupted transfers
resume; the run directory links to the cache; ``clean_cache`` / ``edgekit device clean``; the
Python floor; a link dropped mid-run keeps the finished result; passphrase-protected keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from edgekit.errors import AuthFailedError, ConnectionFailedError, RemoteRuntimeMissingError
from edgekit.resources import SUPERVISOR_NAME, program_path, runner_path
from edgekit.targets import cache as cache_module
from edgekit.targets import ssh_transfer as transfer_module
from edgekit.targets.base import RunJob
from edgekit.targets.cache import SUPERVISOR, file_digest, split_blocks
from tests.targets.test_ssh import benchmark_job, stub_runner, tiny_onnx

pytestmark = pytest.mark.ssh

# A runner that reports what it saw: sha256, link count and mode of every file in the run dir.
STUB_HASHES = """
import hashlib, json, os, stat, sys
d = sys.argv[-1]
seen = {}
for name in sorted(os.listdir(d)):
    path = os.path.join(d, name)
    if os.path.isfile(path) and not name.startswith("."):
        st = os.stat(path)
        seen[name] = {"sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
                      "nlink": st.st_nlink, "mode": oct(stat.S_IMODE(st.st_mode)),
                      "islink": os.path.islink(path)}
with open(os.path.join(d, "result.json"), "w") as f:
    json.dump({"schema_version": 1, "ok": True, "error": None, "seen": seen}, f)
"""


@pytest.fixture
def workdir(ssh_device) -> Iterator[str]:
    name = f"~/edgekit-cache-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["rm", "-rf", "--", str(ssh_device.remote_path(name))], check=False)


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "model weights.bin"
    path.write_bytes(os.urandom(300 * 1024))
    return path


def _job(payload: Path) -> RunJob:
    return RunJob(job={"schema_version": 1}, files={"model.bin": payload})


def _cache_dir(ssh_device, workdir: str) -> Path:
    return ssh_device.remote_path(workdir) / "cache"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cold_then_warm_pushes_nothing(ssh_device, workdir: str, payload: Path, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, STUB_HASHES)
    accepted = ssh_device.sshd.log_text().count("Accepted publickey")
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        first = target.run(_job(payload), tmp_path / "a")
        second = target.run(_job(payload), tmp_path / "b")
        stats = target.stats()
    assert first.bytes_pushed == payload.stat().st_size + runner.stat().st_size
    assert first.transfer["files_pushed"] == 2
    assert second.bytes_pushed == 0 and second.transfer["files_cached"] == 2
    assert stats["connections"] == 1 and stats["runs"] == 2
    seen = first.result["seen"]["model.bin"]
    assert seen["sha256"] == _sha(payload)
    assert seen["nlink"] == 2 and not seen["islink"]  # a hard link into the cache
    assert seen["mode"] == "0o400"  # cache entries are read-only
    # a new connection (the next deploy) pushes nothing either, and hashes what it uses
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        third = target.run(_job(payload), tmp_path / "c")
    assert third.bytes_pushed == 0 and third.transfer["files_cached"] == 2
    assert ssh_device.sshd.log_text().count("Accepted publickey") == accepted + 2
    cache = _cache_dir(ssh_device, workdir)
    assert sorted(p.name for p in cache.iterdir()) == sorted([_sha(payload), _sha(runner)])
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert ssh_device.run_dirs(workdir) == []


def test_corrupt_cache_entry_is_found_and_pushed_again(ssh_device, workdir: str, payload: Path,
                                                       tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, STUB_HASHES)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        target.run(_job(payload), tmp_path / "a")
    entry = _cache_dir(ssh_device, workdir) / _sha(payload)
    data = bytearray(entry.read_bytes())
    data[1000] ^= 0xFF  # same size: only the hash can tell
    os.chmod(entry, 0o600)
    entry.write_bytes(bytes(data))
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        result = target.run(_job(payload), tmp_path / "b")
        stats = target.stats()
    assert result.result["seen"]["model.bin"]["sha256"] == _sha(payload)  # the runner got the right bytes
    assert stats["corrupt_entries"] == 1
    assert result.bytes_pushed == payload.stat().st_size  # only the bad file went again
    assert entry.read_bytes() == payload.read_bytes()


def test_truncated_entry_is_pushed_again(ssh_device, workdir: str, payload: Path, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, STUB_HASHES)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        target.run(_job(payload), tmp_path / "a")
    entry = _cache_dir(ssh_device, workdir) / _sha(payload)
    os.chmod(entry, 0o600)
    entry.write_bytes(payload.read_bytes()[:1000])
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        result = target.run(_job(payload), tmp_path / "b")
    assert result.bytes_pushed == payload.stat().st_size
    assert result.result["seen"]["model.bin"]["sha256"] == _sha(payload)


def test_corrupted_transfer_is_caught_by_the_device(ssh_device, workdir: str, payload: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = cache_module.read_local
    flipped = []

    def flaky(path, offset=0, chunk=1 << 20):  # the first transfer of the payload loses a bit
        for i, block in enumerate(real(path, offset, chunk)):
            if Path(path).name == payload.name and not flipped and i == 3:
                flipped.append(True)
                block = bytes([block[0] ^ 1]) + block[1:]
            yield block

    monkeypatch.setattr(transfer_module, "read_local", flaky)
    runner = stub_runner(tmp_path, STUB_HASHES)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        result = target.run(_job(payload), tmp_path / "a")
        stats = target.stats()
    assert flipped and stats["corrupt_entries"] == 1
    assert result.bytes_pushed == 2 * payload.stat().st_size + runner.stat().st_size
    assert result.result["seen"]["model.bin"]["sha256"] == _sha(payload)


@pytest.mark.parametrize("good_prefix", [True, False])
def test_interrupted_transfer_resumes(ssh_device, workdir: str, payload: Path, tmp_path: Path,
                                      good_prefix: bool) -> None:
    runner = stub_runner(tmp_path, STUB_HASHES)
    with ssh_device.target(runner=runner, workdir=workdir) as target:  # the runner is cached
        target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
    half = payload.stat().st_size // 2
    prefix = payload.read_bytes()[:half] if good_prefix else os.urandom(half)
    part = _cache_dir(ssh_device, workdir) / f"{_sha(payload)}.part-earlierrun"
    part.write_bytes(prefix)  # what a dropped link left behind, a minute ago
    os.chown(part, ssh_device.account.pw_uid, ssh_device.account.pw_gid)
    os.utime(part, (time.time() - 60, time.time() - 60))  # (a part written just now may still be growing)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        result = target.run(_job(payload), tmp_path / "b")
    size = payload.stat().st_size
    if good_prefix:
        assert result.bytes_pushed == size - half and result.transfer["bytes_resumed"] == half
    else:  # the device found the resumed file wrong and it was sent again in full
        assert result.bytes_pushed == (size - half) + size and result.transfer["corrupt_entries"] == 1
    assert result.result["seen"]["model.bin"]["sha256"] == _sha(payload)
    assert [p.name for p in _cache_dir(ssh_device, workdir).iterdir() if ".part" in p.name] == []


def test_clean_cache_and_cli(ssh_device, workdir: str, payload: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    runner = stub_runner(tmp_path, STUB_HASHES)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        target.run(_job(payload), tmp_path / "a")
        removed = target.clean_cache()
        assert removed["entries"] == 2 and removed["bytes"] == payload.stat().st_size + runner.stat().st_size
        assert not _cache_dir(ssh_device, workdir).exists()
        again = target.run(_job(payload), tmp_path / "b")  # the same connection notices
    assert again.bytes_pushed == payload.stat().st_size + runner.stat().st_size

    from edgekit.cli import main

    code = main(["device", "clean", "--host", ssh_device.address, "--device", "pi4",
                 "--identity", str(ssh_device.client_key), "--known-hosts", str(ssh_device.known_hosts),
                 "--workdir", workdir, "--python", ssh_device.python])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "removed 2 files" in out and ssh_device.address in out
    assert not _cache_dir(ssh_device, workdir).exists()


def test_python_too_old_is_refused_before_pushing(ssh_device, workdir: str, payload: Path,
                                                  tmp_path: Path) -> None:
    fake = ssh_device.base_dir / f"oldpy-{uuid.uuid4().hex[:6]}"
    fake.mkdir(mode=0o755)
    (fake / "sitecustomize.py").write_text("import sys\nsys.version_info = (3, 5, 10, 'final', 0)\n")
    os.chmod(fake / "sitecustomize.py", 0o644)
    python = f"env PYTHONPATH={fake} {ssh_device.python}"
    with ssh_device.target(python=python, workdir=workdir) as target:
        with pytest.raises(RemoteRuntimeMissingError) as caught:
            target.run(_job(payload), tmp_path / "a")
        assert target.stats()["bytes_pushed"] == 0
    message = caught.value.one_line()
    assert "Python 3.5.10" in message and ">= 3.6" in message and "edgekit provision" in message
    assert ssh_device.run_dirs(workdir) == []


def test_supervisor_runs_on_old_pythons() -> None:
    vermin = Path(sys.executable).with_name("vermin")
    if not vermin.exists():
        pytest.skip("vermin is not installed")
    source = program_path(SUPERVISOR_NAME)  # what supervisor_argv() sends, byte for byte
    assert SUPERVISOR == source.read_text(encoding="utf-8")
    done = subprocess.run([str(vermin), "-t=3.6-", "--no-tips", "--violations", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # Python 2 must at least *compile* it to reach the version check: only library names
    # (not syntax) may be missing there
    done = subprocess.run([str(vermin), "-t=2.7-", "-t=3.0-", "--no-tips", "--violations", str(source)],
                          capture_output=True, text=True)
    problems = [line.strip() for line in done.stdout.splitlines() if "requires" in line and "!2" in line]
    assert all("member requires" in line or "module requires" in line for line in problems), problems


def test_inline_block_framing() -> None:
    body, outputs = b'{"ok": true}', bytes(range(256)) * 3  # binary, with newlines and markers' bytes
    stdout = (b"runner says hi\n" + b"\n@@edgekit-blocks\n"
              + b"\n@@edgekit-file " + str(len(body)).encode() + b' "result.json"\n' + body
              + b"\n@@edgekit-file " + str(len(outputs)).encode() + b' "out dir/o.npz"\n' + outputs
              + b'\n@@edgekit-status {"rc": 0}\n')
    human, files, info = split_blocks(stdout)
    assert human == b"runner says hi\n" and info == {"rc": 0}
    assert files == {"result.json": body, "out dir/o.npz": outputs}
    truncated = b"\n@@edgekit-blocks\n\n@@edgekit-file 99 \"result.json\"\n{}"
    assert split_blocks(truncated)[1] == {}  # a short frame is dropped: the host reads the file instead
    assert split_blocks(b"no marker") == (b"no marker", {}, None)


def test_file_digest_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_digest(path) == (hashlib.sha256(b"abc").hexdigest(), 3)
    time.sleep(0.01)
    path.write_bytes(b"abcd")  # a changed file is hashed again
    assert file_digest(path) == (hashlib.sha256(b"abcd").hexdigest(), 4)


def test_connection_dropped_mid_run_keeps_the_result(ssh_device, workdir: str, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, """
        import json, os, sys, time
        time.sleep(1.5)
        with open(os.path.join(sys.argv[-1], "result.json"), "w") as f:
            json.dump({"schema_version": 1, "ok": True, "error": None, "notes": [], "slept": 1.5}, f)
    """)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        killer = threading.Timer(0.5, lambda: target.connection.transport.close())  # the link goes away
        killer.start()
        try:
            result = target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
        finally:
            killer.cancel()
        stats = target.stats()
    assert result.result["slept"] == 1.5
    assert any("dropped during the run" in note for note in result.result["notes"])
    assert stats["connections"] == 2 and stats["reconnects"] == 1
    assert ssh_device.run_dirs(workdir) == []


def test_connection_dropped_and_gone_is_a_clear_error(ssh_device, sshd_factory, workdir: str,
                                                      tmp_path: Path) -> None:
    server = sshd_factory(name=f"gone-{uuid.uuid4().hex[:6]}")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    runner = stub_runner(tmp_path, "import time\ntime.sleep(5)\n")
    target = ssh_device.target(host=f"{ssh_device.user}@{server.host}:{server.port}", known_hosts=known_hosts,
                               runner=runner, workdir=workdir, reconnect_s=1, connect_timeout=1)
    with target:
        def kill() -> None:
            server.stop()  # the device went away for good
            target.connection.transport.close()

        threading.Timer(0.5, kill).start()
        with pytest.raises(ConnectionFailedError) as caught:
            target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
    text = caught.value.one_line()
    assert "reconnecting failed" in text and "refused" in text and "device clean" in text


# ---------------------------------------------------------------------------- keys


def _encrypted_key(tmp_path: Path, passphrase: str) -> tuple[Path, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "id_locked"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.BestAvailableEncryption(passphrase.encode())))
    os.chmod(path, 0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return path, public.decode()


def test_passphrase_protected_key(ssh_device, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = f"pass-{uuid.uuid4().hex[:8]}"
    key, public = _encrypted_key(tmp_path, secret)
    authorized = ssh_device.base_dir / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text(original + public + " locked\n")
    caplog.set_level("DEBUG")
    try:
        asked: list[Path] = []

        def prompt(path: Path) -> str:
            asked.append(path)
            return secret

        with ssh_device.target(key_filename=key, passphrase=prompt) as target:
            assert target.exec(["true"])[0] == 0
            target.connection.transport.close()
            assert target.exec(["true"])[0] == 0  # reconnected without asking again
        assert asked == [key]
        with pytest.raises(AuthFailedError) as caught:
            ssh_device.target(key_filename=key, passphrase=lambda _p: "wrong-" + secret).open()
        assert "passphrase did not open it" in caught.value.one_line()
        with pytest.raises(AuthFailedError) as caught:  # no way to ask: say how to fix it
            ssh_device.target(key_filename=key).open()
        assert "encrypted" in caught.value.one_line()
        assert secret not in caplog.text and secret not in caught.value.one_line()
    finally:
        authorized.write_text(original)


def test_real_runner_warm_run_uses_inline_result(ssh_device, workdir: str, tmp_path: Path) -> None:
    ssh_device.require_runtime()
    model = tiny_onnx(tmp_path / "m.onnx")
    job = RunJob(job=benchmark_job("m.onnx"), files={"m.onnx": model})
    with ssh_device.target(workdir=workdir) as target:
        cold = target.run(job, tmp_path / "a")
        warm = target.run(job, tmp_path / "b")
    assert cold.bytes_pushed == model.stat().st_size + runner_path().stat().st_size
    assert warm.bytes_pushed == 0
    assert warm.result["ok"] and len(warm.result["samples_ms"]) >= 3
    assert json.loads(json.dumps(warm.result))  # plain JSON all the way


def test_concurrent_pushes_of_one_file_to_one_device(ssh_device, workdir: str, tmp_path: Path) -> None:
    """Two deploys to the same device at once (each with its own connection) both succeed."""
    payload = tmp_path / "shared.bin"
    payload.write_bytes(os.urandom(2 << 20))
    runner = stub_runner(tmp_path, STUB_HASHES)
    results: list[object] = []
    errors: list[BaseException] = []

    def deploy() -> None:
        try:
            with ssh_device.target(runner=runner, workdir=workdir) as target:
                results.append(target.run(_job(payload), tmp_path / uuid.uuid4().hex))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(results) == 3
    assert all(r.result["seen"]["model.bin"]["sha256"] == _sha(payload) for r in results)
    assert sorted(p.name for p in _cache_dir(ssh_device, workdir).iterdir()) == sorted([_sha(payload), _sha(runner)])


def test_runtime_missing_points_to_provision(ssh_device, workdir: str, tmp_path: Path) -> None:
    runner = stub_runner(tmp_path, """
        import json, os, sys
        json.dump({"schema_version": 1, "ok": False, "error": {"kind": "runtime_missing",
                   "message": "no runtime for onnx imports: onnxruntime (No module named 'onnxruntime')"}},
                  open(os.path.join(sys.argv[-1], "result.json"), "w"))
        sys.exit(1)
    """)
    with ssh_device.target(runner=runner, workdir=workdir) as target:
        with pytest.raises(RemoteRuntimeMissingError) as caught:
            target.run(RunJob(job={"schema_version": 1}, files={}), tmp_path / "a")
    assert "edgekit provision" in caught.value.one_line()
    assert ssh_device.run_dirs(workdir) == []
