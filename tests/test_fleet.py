"""Fleets: ``edgekit deploy --host a --host b`` / ``--hosts fleet.yaml`` (edgekit.fleet).

The model is exported once and measured on every device concurrently (one connection each);
one broken device gets a row with its one-line error and does not stop the others.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

import edgekit.deploy as deploy_module
from edgekit.cli import build_parser, main
from edgekit.deploy import DeployOptions
from edgekit.errors import UsageError
from edgekit.fleet import FleetHost, FleetReport, deploy_fleet, load_fleet, render_fleet_text
from tests.targets.test_ssh_deploy import make_prepared, parity_module, ssh_options  # noqa: F401 - a fixture


def test_load_fleet_yaml(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent("""
        concurrency: 3
        defaults:
          python: /opt/venv/bin/python3
          identity: ~/.ssh/id_fleet
        hosts:
          - pi@10.0.0.11
          - host: pi-kitchen
            name: kitchen
            workdir: /data/edgekit
            port: 2222
    """))
    hosts, concurrency = load_fleet(path)
    assert concurrency == 3
    assert hosts[0] == FleetHost("pi@10.0.0.11", "", {"python": "/opt/venv/bin/python3",
                                                      "key_filename": "~/.ssh/id_fleet"})
    assert hosts[1].label == "kitchen" and hosts[1].ssh["workdir"] == "/data/edgekit" and hosts[1].ssh["port"] == 2222
    assert hosts[1].ssh["python"] == "/opt/venv/bin/python3"  # defaults apply under per-host options
    path.write_text("- a\n- b\n")  # a bare list is fine too
    assert [h.host for h in load_fleet(path)[0]] == ["a", "b"]


@pytest.mark.parametrize("text, message", [
    ("hosts: []\n", "no hosts"),
    ("hosts: [{name: x}]\n", "mapping with 'host'"),
    ("hosts: [{host: a, password: hunter2}]\n", "unknown key(s) password"),
    ("hosts: [a]\nretries: 3\n", "unknown key(s) retries"),
    ("hosts: [a]\nconcurrency: 0\n", "concurrency must be a positive integer"),
    ("hosts: [a\n", "not valid YAML"),
])
def test_load_fleet_rejects(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_fleet(path)


def test_cli_fleet_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["deploy", "m.onnx", "--device", "pi4", "--host", "a", "--host", "b",
                              "--concurrency", "2", "--connect-timeout", "3", "--command-timeout", "60"])
    assert args.host == ["a", "b"] and args.concurrency == 2
    assert (args.connect_timeout, args.command_timeout) == (3.0, 60.0)
    args = parser.parse_args(["deploy", "m.onnx", "--device", "pi4", "--hosts", "fleet.yaml"])
    assert args.hosts == "fleet.yaml" and args.host is None
    with pytest.raises(SystemExit):
        parser.parse_args(["deploy", "m.onnx", "--device", "pi4", "--emulate", "--host", "a"])


def test_fleet_rejects_save_outputs() -> None:
    with pytest.raises(UsageError, match="one --host"):
        deploy_fleet("m.onnx", "pi4", ["a", "b"], DeployOptions(save_outputs="out.npz", inputs="in.npz"))


@pytest.mark.ssh
@pytest.mark.slow
def test_fleet_of_eight_with_one_broken(ssh_device, sshd_factory, parity_module, tmp_path: Path,  # noqa: F811
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_device.require_runtime()
    servers = [sshd_factory(name=f"fleet{i}-{uuid.uuid4().hex[:6]}") for i in range(8)]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts_line() for s in servers))
    prepared_calls: list[str] = []

    def prepare(model, device, options, say, work):  # noqa: ANN001, ANN202 - stands in for the export
        prepared_calls.append(model)
        return make_prepared(work / "prepared", device)

    monkeypatch.setattr(deploy_module, "prepare_deploy", prepare)
    workdir = f"~/edgekit-fleet-{uuid.uuid4().hex[:8]}"
    hosts = [FleetHost(f"{ssh_device.user}@{s.host}:{s.port}", name=f"dev{i}") for i, s in enumerate(servers)]
    hosts[5].ssh["python"] = "python3-not-installed"  # the broken one
    options = DeployOptions(runs=5, warmup=1, threads=1,
                            ssh={**ssh_options(ssh_device), "known_hosts": str(known_hosts), "workdir": workdir})
    try:
        report = deploy_fleet("tiny.onnx", "pi4", hosts, options, concurrency=8)
    finally:
        shutil.rmtree(ssh_device.remote_path(workdir), ignore_errors=True)
    assert prepared_calls == ["tiny.onnx"]  # exported once for the whole fleet
    assert [r.name for r in report.rows] == [f"dev{i}" for i in range(8)]
    broken = report.rows[5]
    assert not broken.ok and "python3-not-installed not found on the device" in broken.error
    assert broken.error_type == "RemoteRuntimeMissingError" and "\n" not in broken.error
    good = [r for i, r in enumerate(report.rows) if i != 5]
    assert all(r.ok and r.p50_ms and r.report is not None for r in good), [r.error for r in good]
    assert all(r.report.target.transfer["connections"] == 1 for r in good)
    for server in servers:  # one connection per device
        assert server.log_text().count("Accepted publickey") == 1
    spread = report.spread
    assert spread.n == 7 and spread.p50_min_ms <= spread.p50_median_ms <= spread.p50_max_ms
    assert report.concurrency == 8 and report.host_cpu_s > 0
    text = render_fleet_text(report)
    assert "7 of 8 devices ok" in text and "dev5: " in text and "p50 across 7 devices" in text
    again = FleetReport.model_validate_json(report.to_json())  # JSON all the way, no pickle
    assert again.rows[5].error == broken.error


def test_cli_fleet_reports_every_row_and_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit import fleet as fleet_module
    from edgekit.fleet import FleetRow, FleetSpread

    seen = {}

    def fake(model, device, hosts, options, progress=None, concurrency=None):  # noqa: ANN001, ANN202
        seen.update(hosts=[h.host if isinstance(h, FleetHost) else h for h in hosts], concurrency=concurrency,
                    ssh=options.ssh)
        return FleetReport(model=model, device=device, concurrency=2, wall_s=1.0, prepare_s=0.5, host_cpu_s=0.2,
                           rows=[FleetRow(name="a", host="a", ok=True, p50_ms=1.5),
                                 FleetRow(name="b", host="b", ok=False, error="connection to b:22 refused")],
                           spread=FleetSpread(n=1, p50_min_ms=1.5, p50_median_ms=1.5, p50_max_ms=1.5))

    monkeypatch.setattr(fleet_module, "deploy_fleet", fake)
    out_file = tmp_path / "fleet.json"
    code = main(["deploy", "m.onnx", "--device", "pi4", "--host", "a", "--host", "b", "--concurrency", "2",
                 "--connect-timeout", "4", "--report", str(out_file)])
    out = capsys.readouterr().out
    assert code == 5  # ExitCode.TARGET: a device failed (after every row was shown)
    assert seen["hosts"] == ["a", "b"] and seen["concurrency"] == 2 and seen["ssh"].connect_timeout == 4
    assert "1 of 2 devices ok" in out and "b: connection to b:22 refused" in out
    assert json.loads(out_file.read_text())["rows"][1]["error"] == "connection to b:22 refused"


@pytest.mark.ssh
@pytest.mark.slow
def test_cli_fleet_end_to_end(ssh_device, sshd_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgekit deploy FILE.onnx --host A --host B`: the real flow, from the command line."""
    ssh_device.require_runtime()
    pytest.importorskip("edgekit.export.onnx", reason="the ONNX exporter has not landed")
    pytest.importorskip("edgekit.export.parity", reason="the parity module has not landed")
    from tests.targets.test_ssh import tiny_onnx

    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    servers = [sshd_factory(name=f"cli{i}-{uuid.uuid4().hex[:6]}") for i in range(2)]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts_line() for s in servers))
    model = tiny_onnx(tmp_path / "tiny.onnx")
    workdir = f"~/edgekit-fleet-cli-{uuid.uuid4().hex[:8]}"  # never the shared ~/.cache/edgekit
    profile = tmp_path / "pi4-test.yaml"
    text = (Path(deploy_module.__file__).parents[1] / "device_profiles" / "pi4.yaml").read_text()
    profile.write_text(text.replace("name: pi4", "name: pi4-fleet-test")
                       .replace('workdir: "~/.cache/edgekit"', f'workdir: "{workdir}"'))
    try:
        code = main(["-q", "deploy", str(model), "--device", "pi4-fleet-test", "--profile", str(profile),
                     "--runs", "5", "--warmup", "1", "--threads", "1",
                     *[arg for s in servers for arg in ("--host", f"{ssh_device.user}@{s.host}:{s.port}")],
                     "-i", str(ssh_device.client_key), "--known-hosts", str(known_hosts),
                     "--python", ssh_device.python, "--report", str(tmp_path / "fleet.json")])
    finally:
        assert ssh_device.run_dirs(workdir) == []
        shutil.rmtree(ssh_device.remote_path(workdir), ignore_errors=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 of 2 devices ok" in out and "p50 across 2 devices" in out
    report = json.loads((tmp_path / "fleet.json").read_text())
    assert report["kind"] == "fleet" and all(row["ok"] for row in report["rows"])
    assert all(row["report"]["target"]["transfer"]["connections"] == 1 for row in report["rows"])
