"""How a profile's device gets its runtimes (``install``): wheels pushed by edgekit, or Termux's pkg."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit import devices
from edgekit.errors import ProfileError


def test_android_profile_matches_termux() -> None:
    profile = devices.get("android-arm64")
    assert profile.install.manager == "pkg"
    assert profile.python_version() >= (3, 13)  # Termux's python: sys.platform is "android" from 3.13
    assert profile.runtimes["tflite"] == ["tflite_runtime"]  # no ai_edge_litert build for Android
    assert (profile.ssh.port, profile.ssh.python) == (8022, "python")
    assert profile.install.command() == "pkg install python-numpy python-onnxruntime python-tflite-runtime openssh"
    assert profile.install.command(["tflite_runtime"]) == "pkg install python-tflite-runtime"
    assert profile.install.command([]) is None


def test_wheel_profiles_need_no_install_section() -> None:
    pi4 = devices.get("pi4")
    assert pi4.install.manager == "wheels" and pi4.install.command() is None


def _write(tmp_path: Path, **change) -> Path:
    data = yaml.safe_load(Path(devices.get("android-arm64").source).read_text())
    data.update(change)
    path = tmp_path / "phone.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("install, needle", [
    ({"manager": "pkg", "packages": {}}, "manager pkg needs packages"),
    ({"manager": "wheels", "packages": {"numpy": "python-numpy"}}, "packages are for a package manager"),
    ({"manager": "apt-get", "packages": {"numpy": "python3-numpy"}}, "install.manager"),
    ({"manager": "pkg", "packages": {"numpy": "python-numpy", "onnxruntime": "python-onnxruntime"}},
     "no package for tflite_runtime"),
])
def test_bad_install_sections_name_the_problem(tmp_path: Path, install: dict, needle: str) -> None:
    with pytest.raises(ProfileError) as err:
        devices.load_profile_file(_write(tmp_path, install=install))
    assert needle in str(err.value) and "phone.yaml" in str(err.value)
