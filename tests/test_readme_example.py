"""The README's "Your own model and data" worked example, run exactly as written (in a temp folder)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.slow


def _worked_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- worked-example -->\s*```sh\n(.*?)```\s*<!-- /worked-example -->", text, re.S)
    assert match, "README lost its worked example"
    return match.group(1)


def test_readme_worked_example_runs_as_written(tmp_path: Path) -> None:
    script = _worked_example()
    bin_dir = str(Path(sys.executable).parent)  # `edgekit` and `python` of this install
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "EDGEKIT_HOME": str(tmp_path / "home")}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "my-report.json").read_text())
    assert report["data"]["calibration_samples"] == 50 and report["data"]["evaluation_samples"] == 150
    assert report["accuracy"]["n"] == 150 and report["accuracy"]["metric"] == "classification"
    # the README says what the example shows: top-1 and top-5 beside the float model's
    assert set(report["accuracy"]["values"]) == {"top1", "top5"}
    assert abs(report["accuracy"]["accuracy"] - report["accuracy"]["reference_accuracy"]) <= 0.02
    assert report["artifact"]["precision"] == "int8"
    assert report["artifact"]["manifest"]["preprocess"]["grayscale"] is True
    assert "accuracy" in proc.stdout and "data" in proc.stdout
