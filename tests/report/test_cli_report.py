"""`edgekit report`, `edgekit runs`, `edgekit compare`: thin commands, documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import ExitCode
from edgekit.report.store import RunStore
from tests.report.builders import compress_report, deploy_report

V1_FILE = Path(__file__).parent / "fixtures" / "deploy-v1.json"


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, report: object) -> str:
    path = tmp_path / name
    path.write_text(report.to_json())  # type: ignore[attr-defined]
    return str(path)


def test_report_text_html_md_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "run.json", deploy_report())
    code, out, _ = run_cli(capsys, "report", path)
    assert code == ExitCode.OK and "edgekit deploy  example:fashion-cnn → pi4" in out and "p50" in out
    code, _, err = run_cli(capsys, "report", path, "--html", str(tmp_path / "run.html"))
    assert code == ExitCode.OK and "wrote" in err
    assert (tmp_path / "run.html").read_text().startswith("<!DOCTYPE html>")
    code, out, _ = run_cli(capsys, "report", path, "--md")
    assert code == ExitCode.OK and out.startswith("### edgekit deploy")
    code, _, _ = run_cli(capsys, "-q", "report", path, "--md", str(tmp_path / "run.md"))
    assert code == ExitCode.OK and (tmp_path / "run.md").read_text().startswith("### edgekit deploy")


def test_report_upgrades_an_old_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "report", str(V1_FILE), "--json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data["schema_version"] == 2 and data["run_id"].startswith("v1") and data["op_profile"] == []


def test_report_of_a_compress_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "report", write(tmp_path, "c.json", compress_report()))
    assert code == ExitCode.OK and "3. quantize" in out


def test_report_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "report", str(tmp_path / "missing.json"))
    assert code == ExitCode.USAGE and err.startswith("error: report file not found") and err.count("\n") == 1
    code, _, err = run_cli(capsys, "report", "42")
    assert code == ExitCode.USAGE and "no run '42'" in err and "Traceback" not in err


def test_runs_add_and_list(capsys: pytest.CaptureFixture[str], tmp_path: Path, home: Path) -> None:
    code, _, err = run_cli(capsys, "runs")
    assert code == ExitCode.OK and "no runs recorded" in err
    files = [write(tmp_path, f"{i}.json", deploy_report(seed=i)) for i in range(3)]
    code, _, err = run_cli(capsys, "runs", "--add", *files, str(V1_FILE))
    assert code == ExitCode.OK and err.count("recorded") == 4
    assert (home / "runs.sqlite").is_file()
    code, out, _ = run_cli(capsys, "runs", "--json", "--limit", "2")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [3, 4]
    assert set(rows[0]) >= {"id", "run_id", "created_at", "model", "device", "artifact", "p50_ms", "accuracy"}
    code, out, _ = run_cli(capsys, "runs")
    assert code == ExitCode.OK and "fashion_cnn.int8.onnx" in out and "90.12 %" in out


def test_compare_is_a_ci_gate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = write(tmp_path, "base.json", deploy_report(seed=1))
    same = write(tmp_path, "same.json", deploy_report(seed=2, median_ms=4.2 * 1.01))
    slow = write(tmp_path, "slow.json", deploy_report(seed=3, median_ms=4.2 * 1.2))
    code, out, err = run_cli(capsys, "compare", base, same)
    assert code == ExitCode.OK and "no regression" in out and err == ""
    code, out, err = run_cli(capsys, "compare", base, slow)
    assert code == ExitCode.FAILURE
    assert "REGRESSION latency" in out
    assert err.startswith("error: B is worse than A: latency:") and err.count("\n") == 1
    code, _, _ = run_cli(capsys, "compare", base, slow, "--threshold", "25")
    assert code == ExitCode.OK
    code, out, _ = run_cli(capsys, "compare", base, slow, "--json")
    assert code == ExitCode.FAILURE and json.loads(out)["latency"]["regression"] is True
    code, out, _ = run_cli(capsys, "compare", base, slow, "--md")
    assert out.startswith("### edgekit compare: ❌ regression")


def test_compare_last_two_from_the_store(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    store = RunStore(home / "runs.sqlite")
    store.append(deploy_report(seed=1))
    store.append(deploy_report(seed=2, device="pi5", median_ms=9.0))
    store.append(deploy_report(seed=3, median_ms=4.2 * 1.2))
    code, out, _ = run_cli(capsys, "compare", "--last", "2", "--device", "pi4")
    assert code == ExitCode.FAILURE and "REGRESSION latency" in out
    code, out, _ = run_cli(capsys, "compare", "1", "3")  # store ids
    assert code == ExitCode.FAILURE


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["compare"], "compare needs two runs, got 0"),
        (["compare", "--last", "2", "a.json"], "not both"),
        (["compare", "--device", "pi4", "a.json", "b.json"], "--model and --device select runs for --last"),
        (["compare", "--last", "2"], "has 0 deploy runs"),
    ],
)
def test_compare_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == ExitCode.USAGE and fragment in err and err.count("\n") == 1


def test_compare_refuses_a_compress_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "compare", write(tmp_path, "a.json", deploy_report()),
                           write(tmp_path, "c.json", compress_report()))
    assert code == ExitCode.USAGE and "compress report, not a deploy run" in err
