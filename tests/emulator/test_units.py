"""Emulator and provisioning logic that needs no root, no qemu and no device (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit import emulator, provision
from edgekit.errors import UsageError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(emulator.CACHE_ENV, str(tmp_path / "emu"))
    return tmp_path / "emu"


# ------------------------------------------------------------------------------------ emulator


def test_pi4_is_debian_bookworm_arm64_and_shares_its_image_with_the_pi_zero(cache):
    spec = emulator.image_spec("pi4")
    assert (spec.distro, spec.release, spec.arch, spec.user) == ("debian", "bookworm", "arm64", "pi")
    assert spec.machine == "aarch64" and spec.qemu_arch == "aarch64"
    assert "python3-numpy" in spec.packages and "openssh-server" in spec.packages
    assert spec.rootfs == cache.resolve() / "images" / spec.key / "rootfs"
    assert emulator.image_spec("pi-zero-2w").key == spec.key


def test_jetson_nano_cannot_be_built_from_debian(cache):
    with pytest.raises(emulator.EmulatorUnsupportedError) as info:
        emulator.image_spec("jetson-nano")
    message = info.value.one_line()
    assert "Ubuntu" in message and "Debian" in message and "3.6" in message
    assert info.value.exit_code == 2


def test_start_without_root_says_so(cache, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(emulator.NeedsRootError) as info:
        emulator.start("pi4", name="never-started")
    assert "needs root" in str(info.value) and "sudo" in info.value.hint
    assert not (cache / "instances" / "never-started").exists()


def test_cli_start_without_root_is_one_line_and_exit_2(cache, monkeypatch, capsys):
    from edgekit.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["emulator", "start", "pi4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: starting an emulated device needs root") and len(err.splitlines()) == 1


def test_status_of_an_unknown_instance(cache):
    assert emulator.status("nothing-here") == {"name": "nothing-here", "running": False, "known": False}
    assert emulator.status_all() == []


def test_bad_instance_names_are_refused(cache):
    for bad in ("../etc", "Pi4", "", "a/b"):
        with pytest.raises(UsageError):
            emulator.status(bad)


def test_state_round_trip_and_cli_flags(cache):
    state = emulator.EmulatorState(
        name="x", device="pi4", image_key="k", base_rootfs="/b", instance_dir="/i", mode="overlay", pid=0,
        port=2222, user="pi", key_file="/i/id_ed25519", known_hosts="/i/known_hosts", ssh_config="/i/ssh_config",
        alias="edgekit-x", log="/i/sshd.log", started_at=0.0, machine="aarch64",
    )
    assert state.address == "pi@127.0.0.1:2222"
    assert state.cli_args() == "--host edgekit-x"  # resolved from the ssh_config edgekit writes
    assert state.cli_args_explicit() == "--host pi@127.0.0.1:2222 --known-hosts /i/known_hosts -i /i/id_ed25519"
    assert emulator.EmulatorState.from_dict(state.to_dict() | {"unknown_field": 1}) == state
    assert not emulator.is_running(state)


# ------------------------------------------------------------------------------------ provision


def test_manylinux_platforms_are_expanded_for_pip():
    arm = provision.manylinux_platforms("aarch64", "2.36")
    assert arm[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in arm
    assert arm[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert "manylinux1_aarch64" not in arm
    x86 = provision.manylinux_platforms("x86_64", "2.17")
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(x86)
    with pytest.raises(provision.ProvisionError, match="not glibc"):
        provision.manylinux_platforms("aarch64", None)


def test_runner_python_puts_the_site_dir_on_pythonpath():
    command = provision.runner_python("python3", "/home/pi/.local/lib/edgekit-site")
    assert command == "env PYTHONPATH=/home/pi/.local/lib/edgekit-site python3"
    assert provision.runner_python(command, "/other") == command
    assert provision.runner_python("/opt/py3/bin/python3", "/a b") == "env 'PYTHONPATH=/a b' /opt/py3/bin/python3"


def test_runtime_requirements_pin_to_the_host():
    from importlib.metadata import version

    assert provision.runtime_requirements(["onnxruntime"]) == [f"onnxruntime=={version('onnxruntime').split('+')[0]}"]
    assert provision.runtime_requirements(["onnxruntime"], pin_to_host=False) == ["onnxruntime"]
    assert provision.runtime_requirements(["tflite_runtime==2.14.0"]) == ["tflite-runtime==2.14.0"]
    with pytest.raises(UsageError, match="unknown runtime"):
        provision.runtime_requirements(["pytorch"])


def test_executorch_goes_on_without_its_export_tools_but_with_torch():
    """executorch's wheel names coremltools (no aarch64 wheel), pandas, scikit-learn...: provision
    downloads it alone (--no-deps) and resolves what its runtime imports with their dependencies:
    torch pinned to the host's (the runtime links it), the rest as the device's constraints allow."""
    from importlib.metadata import version

    wanted = ["onnxruntime", "executorch"]
    reqs = provision.runtime_requirements(wanted)
    with_deps, alone = provision.split_requirements(wanted, reqs)
    assert alone == [f"executorch=={version('executorch')}"]
    assert with_deps == [f"onnxruntime=={version('onnxruntime').split('+')[0]}",
                         f"torch=={version('torch').split('+')[0]}", "numpy", "flatbuffers", "ruamel.yaml", "tabulate"]
    loose = provision.split_requirements(wanted, provision.runtime_requirements(wanted, pin_to_host=False),
                                         pin_to_host=False)
    assert loose == (["onnxruntime", "torch", "numpy", "flatbuffers", "ruamel.yaml", "tabulate"], ["executorch"])
    assert provision.split_requirements(["onnxruntime"], ["onnxruntime"]) == (["onnxruntime"], [])


def test_pip_is_asked_for_the_lone_wheels_without_dependencies(monkeypatch, tmp_path):
    calls = []

    def fake_run(argv, **_kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(provision.subprocess, "run", fake_run)
    facts = _facts(dists={})
    resolver = provision.WheelResolver(facts, tmp_path, offline=True)
    resolver.resolve(["torch==2.13.0"], ["executorch==1.4.1"])
    assert [("--no-deps" in argv, argv[-1]) for argv in calls] == [(False, "torch==2.13.0"), (True, "executorch==1.4.1")]


def test_tensorrt_is_never_pip_installed():
    with pytest.raises(UsageError, match="JetPack"):
        provision.runtime_requirements(["tensorrt"])


def test_default_runtimes_follow_the_profile():
    from edgekit.devices import get

    assert sorted(provision.default_runtimes(get("pi4"))) == ["ai_edge_litert", "onnxruntime"]
    assert sorted(provision.default_runtimes(get("jetson-nano"))) == ["onnxruntime", "tflite_runtime"]


def test_facts_script_runs_on_this_python(tmp_path):
    done = subprocess.run([sys.executable, "-c", provision.FACTS_SCRIPT, str(tmp_path / "site")],
                          capture_output=True, text=True, check=True)
    facts = provision._parse_marked_json(done.stdout, "@@edgekit-facts")
    assert facts["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert facts["site_dir"] == str(tmp_path / "site") and facts["site_dir_exists"] is False
    assert "numpy" in facts["dists"] and facts["glibc"]
    assert facts["free_disk_mib"] > 0 and facts["mem_total_mib"] > 0


def _wheel(path: Path, files: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def test_install_script_unpacks_wheels_and_swaps_atomically(tmp_path):
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": (b"X = 1\n", 0o644),
        "demo/lib.so": (b"\x7fELF", 0o755),
        "demo-1.0.dist-info/METADATA": (b"Name: demo\nVersion: 1.0\n", 0o644),
        "demo-1.0.data/purelib/demo_extra.py": (b"Y = 2\n", 0o644),
        "demo-1.0.data/scripts/demo-cli": (b"#!/bin/sh\n", 0o755),
    })
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"packages": [{"name": "demo"}]}))
    site = tmp_path / "site"
    for _ in range(2):  # a second install replaces the first
        done = subprocess.run([sys.executable, "-c", provision.INSTALL_SCRIPT, str(site), str(manifest), str(wheel)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "@@edgekit-installed" in done.stdout
    assert (site / "demo" / "__init__.py").read_text() == "X = 1\n"
    assert os.access(site / "demo" / "lib.so", os.X_OK)
    assert (site / "demo_extra.py").is_file() and not (site / "demo-cli").exists()
    assert json.loads((site / "edgekit-site.json").read_text())["installed_at"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("site")) == ["site"]
    bad = _wheel(tmp_path / "bad-1.0-py3-none-any.whl", {"../escape.py": (b"", 0o644)})
    done = subprocess.run([sys.executable, "-c", provision.INSTALL_SCRIPT, str(site), str(manifest), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "unsafe path" in done.stderr
    assert not (tmp_path / "escape.py").exists() and (site / "demo" / "__init__.py").is_file()


def _facts(**over):
    base = dict(python="3.11.2", implementation="cpython", machine="aarch64", glibc="2.36", home="/home/pi",
                site_dir="/home/pi/.local/lib/edgekit-site", site_dir_exists=False, manifest=None,
                dists={"numpy": "1.24.2"}, pip=False, free_disk_mib=20000, mem_total_mib=3800,
                mem_available_mib=3000)
    return provision.DeviceFacts(**(base | over))


def test_doctor_checks_say_what_is_missing_and_what_to_do():
    from edgekit.devices import get

    probe = {
        "device": {"numpy": "1.24.2", "emulated_by": None},
        "state_before": {"governor": "ondemand", "temperature_c": 74.0,
                         "throttled": {"raw": "0x50005", "now": {"under_voltage": True}, "since_boot": {}}},
        "runtimes": {"onnxruntime": {"available": True, "version": "1.32.0"},
                     "ai_edge_litert": {"available": False, "error": "ModuleNotFoundError"}},
    }
    checks = {c.name: c for c in provision._doctor_checks(get("pi4"), _facts(), probe, "edgekit provision --device pi4 --host H")}
    assert checks["runtime onnx"].status == "ok" and "1.32.0" in checks["runtime onnx"].detail
    assert checks["runtime tflite"].status == "fail"
    assert checks["runtime tflite"].fix.startswith("run `edgekit provision --device pi4 --host H`")
    assert checks["governor"].status == "warn" and "performance" in checks["governor"].fix
    assert checks["temperature"].status == "warn"
    assert checks["throttling"].status == "warn" and "under_voltage" in checks["throttling"].detail
    assert checks["python"].status == "ok" and checks["arch"].status == "ok"
    report = provision.DoctorReport("pi4", "pi@h", list(checks.values()), {}, probe, "python3")
    assert not report.ok and "FAIL" in report.to_text() and "→ run `edgekit provision" in report.to_text()
    other = {c.name: c for c in provision._doctor_checks(get("pi4"), _facts(python="3.9.2", machine="armv7l"),
                                                         probe, "x")}
    assert other["python"].status == "warn" and other["arch"].status == "fail"


def test_platform_key_names_the_wheel_cache():
    assert _facts().platform_key == "cp311-manylinux_2_36_aarch64"


def test_qemu_cpu_follows_the_profiles_core(monkeypatch, tmp_path):
    from edgekit.devices import get

    seen = []
    monkeypatch.setattr(emulator, "_qemu_accepts", lambda arch, cpu, rootfs: seen.append(cpu) or cpu != "cortex-a78ae")
    assert emulator.choose_qemu_cpu(get("pi4"), "aarch64", tmp_path)[0] == "cortex-a72"
    assert emulator.choose_qemu_cpu(get("pi-zero-2w"), "aarch64", tmp_path)[0] == "cortex-a53"
    assert emulator.choose_qemu_cpu(get("pi5"), "aarch64", tmp_path)[0] == "cortex-a76"
    cpu, note = emulator.choose_qemu_cpu(get("jetson-orin-nano"), "aarch64", tmp_path)
    assert cpu == "max,sve=off,sme=off" and "cannot emulate the device's core (Cortex-A78AE)" in note
    assert "cortex-a78ae" in seen
    assert "SetEnv QEMU_CPU=cortex-a72" in emulator._sshd_config(22, "pi", "pi4", "cortex-a72", (9, 2))
    assert "PermitUserEnvironment QEMU_CPU" in emulator._sshd_config(22, "pi", "pi4", "cortex-a72", (8, 4))
    assert "QEMU_CPU" not in emulator._sshd_config(22, "pi", "pi4", None)


# ------------------------------------------------------------------------------------ Termux (android-arm64)


def test_facts_script_tells_android_from_linux(tmp_path):
    """The same script on a Python that says it is Android (3.13+: sys.platform "android",
    Android builds: sys.getandroidapilevel) reports it; on this Linux it does not."""
    plain = subprocess.run([sys.executable, "-c", provision.FACTS_SCRIPT, str(tmp_path)],
                           capture_output=True, text=True, check=True)
    facts = provision._parse_marked_json(plain.stdout, "@@edgekit-facts")
    assert facts["platform"] == sys.platform and facts["android_api"] is None
    assert not provision.DeviceFacts(**facts).is_android
    android = ("import sys; sys.platform = 'android'; sys.getandroidapilevel = lambda: 34\n"
               + provision.FACTS_SCRIPT)
    done = subprocess.run([sys.executable, "-c", android, str(tmp_path)], capture_output=True, text=True, check=True)
    facts = provision.DeviceFacts(**provision._parse_marked_json(done.stdout, "@@edgekit-facts"))
    assert facts.is_android and facts.android_api == 34
    assert facts.platform_label.startswith("Android API 34 ")


def test_doctor_names_termux_packages_for_the_android_profile():
    from edgekit.devices import get

    profile = get("android-arm64")
    probe = {"device": {"numpy": None},
             "runtimes": {"onnxruntime": {"available": False, "error": "ModuleNotFoundError"},
                          "tflite_runtime": {"available": True, "version": "2.20.0"}}}
    facts = _facts(python="3.14.0", glibc=None, platform="android", android_api=34, dists={})
    checks = {c.name: c for c in provision._doctor_checks(profile, facts, probe, "edgekit provision ...")}
    assert checks["libc"].status == "ok" and "pkg packages" in checks["libc"].detail
    assert checks["numpy"].fix == "on the device: pkg install python-numpy"
    assert checks["runtime onnx"].fix == "on the device: pkg install python-onnxruntime"
    assert checks["runtime tflite"].status == "ok" and "tflite_runtime 2.20.0" in checks["runtime tflite"].detail
    assert "pkg packages" in checks["provisioned"].detail
    assert provision.missing_on_device(profile, probe) == ["numpy", "onnxruntime"]
    # a wheel profile used on a phone says what works there instead of pushing manylinux wheels
    pi4 = {c.name: c for c in provision._doctor_checks(get("pi4"), facts, probe, "x")}
    assert pi4["libc"].status == "fail" and "pkg install python-numpy" in pi4["libc"].fix
