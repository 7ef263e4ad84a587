"""android-arm64 (Termux) over a real sshd on Termux's port 8022: provision pushes no wheel and
says which `pkg install` to run; doctor names the package. The server is this host's OpenSSH
(a glibc Linux standing in for the phone), so the result also says the device is not Android."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.provision import doctor, provision

TERMUX_PORT = 8022


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def termux_like(ssh_device, sshd_factory, tmp_path):
    """(host argument, ssh options): an sshd on 8022 when that port is free (the profile's default
    port then applies: no port in the host), else on a free port given in the host."""
    on_8022 = _port_free(TERMUX_PORT)
    server = sshd_factory(port=TERMUX_PORT) if on_8022 else sshd_factory()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    host = f"{ssh_device.user}@127.0.0.1" + ("" if on_8022 else f":{server.port}")
    ssh = {"key_filename": str(ssh_device.client_key), "known_hosts": str(known_hosts),
           "ssh_config": str(ssh_device.ssh_config), "python": ssh_device.python, "use_agent": False}
    return host, ssh, server


@pytest.mark.ssh
def test_provision_prints_the_pkg_line_and_pushes_nothing(ssh_device, termux_like, tmp_path: Path) -> None:
    ssh_device.require_runtime()
    host, ssh, server = termux_like
    site = ssh_device.remote_path("~/.local/lib/edgekit-site")
    had_site = site.exists()
    result = provision("android-arm64", host, ssh=ssh, cache=tmp_path / "wheels")
    assert result.address.endswith(f"@127.0.0.1:{server.port}")
    assert result.manager == "pkg" and not result.installed and result.packages == []
    # the stand-in has numpy and onnxruntime (from the host's venv) but no tflite_runtime
    assert result.missing == ["tflite_runtime"]
    assert result.command == "pkg install python-tflite-runtime"
    assert result.runtimes["onnxruntime"]["available"]
    assert any("expects Android (Termux), the device reports Linux" in n for n in result.notes)
    assert site.exists() == had_site and not Path(f"{site}.incoming").exists()
    assert not (tmp_path / "wheels").exists()  # no wheel was even downloaded
    text = result.to_text()
    assert "edgekit pushes nothing here" in text and text.endswith("  pkg install python-tflite-runtime")


@pytest.mark.ssh
def test_doctor_and_cli_name_the_termux_package(ssh_device, termux_like, capsys) -> None:
    ssh_device.require_runtime()
    host, ssh, _server = termux_like
    report = doctor("android-arm64", host, ssh=ssh)
    tflite, onnx = report.check("runtime tflite"), report.check("runtime onnx")
    assert tflite.status == "fail" and tflite.fix == "on the device: pkg install python-tflite-runtime"
    assert onnx.status == "ok" and report.check("numpy").status == "ok"
    assert report.check("libc").status == "info"  # glibc here, where a phone has bionic
    code = main(["-q", "provision", "--device", "android-arm64", "--host", host, "-i", ssh["key_filename"],
                 "--known-hosts", ssh["known_hosts"], "--python", ssh["python"]])
    out = capsys.readouterr().out
    assert code == 0 and "run on the device:\n  pkg install python-tflite-runtime" in out
