"""Every program that runs on a device is a real file in runtimes/, held to the runner's rules.

The rules (each file writes them at its top): Python files run on Python >= 3.6 (vermin), use
the standard library (numpy only where the runner's dependencies are there) and never import
edgekit; shell files are POSIX sh (dash -n).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.resources import (
    IMAGE_VERSIONS_NAME,
    PROGRAM_NAMES,
    RUNNER_NAME,
    SUPERVISOR_NAME,
    program_path,
    program_text,
    runtimes_dir,
)
from edgekit.targets.cache import supervisor_argv, supervisor_protocol

VERMIN = Path(sys.executable).with_name("vermin")
VERMIN_36 = [str(VERMIN), "-t=3.6-", "--no-tips", "--violations"]
SH = shutil.which("dash") or shutil.which("sh") or "/bin/sh"
NUMPY_ALLOWED = {RUNNER_NAME, IMAGE_VERSIONS_NAME}  # they run beside the runner's dependencies


def test_every_file_in_runtimes_is_a_known_program() -> None:
    on_disk = {p.name for p in runtimes_dir().iterdir() if p.suffix in (".py", ".sh") and p.name != "__init__.py"}
    assert on_disk == set(PROGRAM_NAMES)


def _imports(tree: ast.AST) -> set[str]:
    top: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    return top


@pytest.mark.parametrize("name", PROGRAM_NAMES)
def test_program_keeps_the_runner_rules(name: str) -> None:
    path = program_path(name)
    assert "Rules for this file" in path.read_text()  # written at its top, where an editor sees them
    if name.endswith(".sh"):
        done = subprocess.run([SH, "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return
    if not VERMIN.exists():
        pytest.skip("vermin is not installed")
    done = subprocess.run([*VERMIN_36, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    imports = _imports(ast.parse(path.read_text()))
    assert "edgekit" not in imports and "__future__" not in imports
    allowed = {"numpy"} if name in NUMPY_ALLOWED else set()
    assert imports - set(sys.stdlib_module_names) <= allowed, imports


def test_the_checks_catch_a_regression(tmp_path: Path) -> None:
    bad_py = tmp_path / "bad.py"
    bad_py.write_text("if (n := 3) > 2:\n    print(f'{n=}')\n")
    bad_sh = tmp_path / "bad.sh"
    bad_sh.write_text("if [ -n \"$1\" ]; then\n  echo unclosed\n")
    assert subprocess.run([SH, "-n", str(bad_sh)], capture_output=True).returncode != 0
    if VERMIN.exists():
        assert subprocess.run([*VERMIN_36, str(bad_py)], capture_output=True).returncode != 0


def test_programs_are_sent_as_the_files_say() -> None:
    """No templating: what the host sends is the file's text, byte for byte."""
    argv = supervisor_argv()
    assert argv[:2] == ["-c", program_path(SUPERVISOR_NAME).read_text(encoding="utf-8")]
    assert json.loads(argv[2]) == supervisor_protocol()
    for name in PROGRAM_NAMES:
        assert program_text(name) == program_path(name).read_text(encoding="utf-8")
        assert "%(" not in program_text(name)  # what the old string templates left behind


def test_supervisor_takes_its_constants_from_the_protocol_argument() -> None:
    protocol = {**supervisor_protocol(), "min_python": [99, 0], "too_old": 77, "python_mark": "@@test-python "}
    done = subprocess.run([sys.executable, "-c", program_text(SUPERVISOR_NAME), json.dumps(protocol)],
                          input=b"", capture_output=True, timeout=60)
    assert done.returncode == 77
    assert f"@@test-python {sys.version_info.major}.{sys.version_info.minor}." in done.stderr.decode()
    ok = subprocess.run([sys.executable, *supervisor_argv()], input=b'{"mode": "check"}\n',
                        capture_output=True, timeout=60)
    assert ok.returncode == 0 and f"{supervisor_protocol()['python_mark']}" in ok.stderr.decode()
    assert ok.stderr.decode().rstrip().endswith(" ok")
