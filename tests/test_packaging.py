"""The built wheel carries the runner, the other device-side programs and the device profiles, and a
non-editable install finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.resources import PROGRAM_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (built,) = out.glob("edgekit-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contains_runner_profiles_and_weights(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for program in PROGRAM_NAMES:  # the runner and every other device-side program
        assert f"edgekit/_runtimes/{program}" in names
    for profile in ("pi4", "pi5", "pi-zero-2w", "jetson-nano", "jetson-orin-nano", "android-arm64"):
        assert f"edgekit/_device_profiles/{profile}.yaml" in names
    assert "edgekit/examples/fashion_cnn.pt" in names
    assert "edgekit/data/sources.py" in names  # subpackages are listed one by one in pyproject.toml
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgekit = edgekit.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_non_editable_install_finds_runner_and_profiles(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import edgekit.resources as r, edgekit.devices as d, edgekit.targets.cache as c;"
        "print(r.runner_path()); print(r.runner_path().is_file()); print(d.get('pi4').source);"
        "print(r.program_path(r.SUPERVISOR_NAME)); print(c.supervisor_argv()[1] == r.program_path(r.SUPERVISOR_NAME).read_text());"
        "print(all(r.program_path(n).is_file() for n in r.PROGRAM_NAMES))"
    )
    # run outside the checkout so the repo's own folders cannot be picked up
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(str(target)) and out[0].endswith("_runtimes/edgekit_runner.py")
    assert out[1] == "True"
    assert out[2].startswith(str(target)) and out[2].endswith("_device_profiles/pi4.yaml")
    assert out[3].startswith(str(target)) and out[3].endswith("_runtimes/edgekit_supervisor.py")
    assert out[4:] == ["True", "True"]
