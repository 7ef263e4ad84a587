"""Device profiles: every shipped one loads; broken ones name the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit import devices
from edgekit.errors import ProfileError
from edgekit.resources import builtin_profiles_dir

SHIPPED = ["pi4", "pi5", "pi-zero-2w", "jetson-nano", "jetson-orin-nano", "android-arm64", "x86-64"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_with_real_figures(name: str) -> None:
    profile = devices.get(name)
    assert profile.name == name
    assert Path(profile.source).name == f"{name}.yaml"
    assert profile.arch == ("x86_64" if name == "x86-64" else "aarch64")
    assert 1 <= profile.cpu.cores <= 16 and 500 <= profile.cpu.max_clock_mhz <= 4000
    assert profile.memory_mib >= 512
    assert profile.preferred and all(p.format in profile.runtimes for p in profile.preferred)
    assert profile.python_version() >= (3, 6)


def test_file_names_match_profile_names() -> None:
    for path in builtin_profiles_dir().glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["name"] == path.stem


def test_unknown_device_suggests_closest_names() -> None:
    with pytest.raises(ProfileError) as err:
        devices.get("pi-4")
    assert "unknown device 'pi-4'" in str(err.value)
    assert "pi4" in err.value.hint


def _write_profile(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((builtin_profiles_dir() / "pi4.yaml").read_text())
    data.update(changes)
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_broken_field_names_file_field_and_problem(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, cpu={"model": "x", "cores": 0, "max_clock_mhz": 1000})
    with pytest.raises(ProfileError) as err:
        devices.load_profile_file(path)
    message = str(err.value)
    assert str(path) in message and "cpu.cores" in message and "greater than 0" in message


def test_unknown_field_and_bad_format_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="field 'ram'"):
        devices.load_profile_file(_write_profile(tmp_path, ram=4))
    with pytest.raises(ProfileError, match="unknown format 'coreml'"):
        devices.load_profile_file(_write_profile(tmp_path, preferred=[{"format": "coreml", "precision": "fp32"}]))


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncpu: [unclosed\n")
    with pytest.raises(ProfileError, match=r"bad.yaml: line \d+ is not valid YAML"):
        devices.load_profile_file(path)


def test_user_profiles_extend_and_override_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config" / "edgekit" / "devices"
    config.mkdir(parents=True)
    data = yaml.safe_load((builtin_profiles_dir() / "pi4.yaml").read_text())
    (config / "pi4.yaml").write_text(yaml.safe_dump({**data, "memory_mib": 8192}))
    (config / "my-board.yaml").write_text(yaml.safe_dump({**data, "name": "my-board"}))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    assert devices.get("pi4").memory_mib == 8192
    assert devices.get("my-board").source.endswith("my-board.yaml")
    extra = _write_profile(tmp_path, name="lab-pi", threads=2)
    assert devices.get("lab-pi", [extra]).threads == 2


def test_a_profile_may_list_executorch(tmp_path: Path) -> None:
    """ExecuTorch is a registered format: a profile can prefer it and name its runtime."""
    profile = devices.load_profile_file(_write_profile(
        tmp_path, runtimes={"onnx": ["onnxruntime"], "executorch": ["executorch"]},
        preferred=[{"format": "executorch", "precision": "int8"}, {"format": "onnx", "precision": "fp32"}]))
    assert profile.runtimes["executorch"] == ["executorch"] and profile.preferred[0].format == "executorch"
