"""The CLI's contract with users: one-line errors, documented exit codes, no traceback unless --debug."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import ExitCode


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if not line.startswith("·")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "deploy", "example:fashion-cnn", "--device", "pi3", "--emulate")
    assert code == ExitCode.USAGE
    assert_one_line_error(err, "unknown device 'pi3'", "pi4")


def test_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "deploy", str(tmp_path / "nope.onnx"), "--device", "pi4", "--emulate")
    assert code == ExitCode.USAGE
    assert_one_line_error(err, "model file not found")


def test_corrupt_onnx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    code, _, err = run_cli(capsys, "deploy", str(bad), "--device", "pi4", "--emulate")
    assert code in (ExitCode.USAGE, ExitCode.EXPORT)
    assert_one_line_error(err, "corrupt.onnx")


def test_wrong_input_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "deploy", "example:fashion-cnn", "--input-shape", "1,3,5",
                           "--device", "pi4", "--emulate")
    assert code == ExitCode.USAGE
    assert_one_line_error(err, "does not accept an input of shape 1,3,5", "--input-shape")


def test_target_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "deploy", "example:fashion-cnn", "--device", "pi4")
    assert code == ExitCode.USAGE
    assert_one_line_error(err, "--emulate", "--host")


def test_unreachable_host(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # port 1 on loopback: nothing listens there, so the connection is refused at once
    code, _, err = run_cli(capsys, "deploy", "example:fashion-cnn", "--device", "pi4", "--format", "onnx",
                           "--precision", "fp32", "--host", "pi@127.0.0.1:1",
                           "--known-hosts", str(tmp_path / "known_hosts"))
    assert code == ExitCode.TARGET
    assert_one_line_error(err, "127.0.0.1")


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.errors import ProfileError

    with pytest.raises(ProfileError):
        main(["--debug", "deploy", "example:fashion-cnn", "--device", "pi3", "--emulate"])


def test_devices_json_lists_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "devices", "--json")
    assert code == 0
    names = {p["name"] for p in json.loads(out)}
    assert {"pi4", "pi5", "pi-zero-2w", "jetson-nano", "jetson-orin-nano", "android-arm64"} <= names


def test_devices_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "devices", "show", "pi4", "--json")
    assert code == 0 and json.loads(out)["cpu"]["cores"] == 4
    code, _, err = run_cli(capsys, "devices", "show", "jetson")
    assert code == ExitCode.USAGE and "jetson-nano" in err


def test_console_script_exit_code_and_no_traceback() -> None:
    exe = shutil.which("edgekit", path=str(Path(sys.executable).parent))
    assert exe, "the edgekit console script is not installed in this environment"
    proc = subprocess.run([exe, "deploy", "example:fashion-cnn", "--device", "nope", "--emulate"],
                          capture_output=True, text=True)
    assert proc.returncode == ExitCode.USAGE
    assert proc.stderr.startswith("error: unknown device") and "Traceback" not in proc.stderr
