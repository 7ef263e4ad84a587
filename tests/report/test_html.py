"""The HTML page: self-contained (no network), plots present, and it renders in headless Chromium."""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from edgekit.report.html import render_html, write_html
from edgekit.report.schema import LatencySummary
from tests.report.builders import compress_report, deploy_report, export_report, op_profile

DEPLOY_PLOTS = ("latency-histogram", "latency-timeline", "memory-bars")
COMPRESS_PLOTS = ("pareto-size", "pareto-latency")


class _Elements(html.parser.HTMLParser):
    """Every start tag with its attributes, and whether tags balance."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "wbr", "col", "source"}  # HTML void elements

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def ids(page: str) -> set[str]:
    return {attrs["id"] for _, attrs in parse(page).tags if attrs.get("id")}


def assert_self_contained(page: str) -> None:
    for tag, attrs in parse(page).tags:
        for name in ("src", "href", "xlink:href", "action", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), f"<{tag} {name}={value!r}> would fetch"
        assert tag not in ("link", "iframe", "img", "object", "embed"), f"<{tag}> in a self-contained page"
        if tag == "script":
            assert attrs.get("type") == "application/json", "no executable script"
    assert "@import" not in page and "url(" not in page


def test_deploy_page_has_every_section_and_plot() -> None:
    page = render_html(deploy_report(op_profile=op_profile()))
    assert_self_contained(page)
    found = ids(page)
    assert set(DEPLOY_PLOTS) | {"op-profile"} <= found
    assert {"latency", "memory", "quality", "device", "artifact", "warnings", "notes"} <= found
    points = page.count('class="pt-warmup') + page.count('class="pt-steady')
    assert points == 220  # every warm-up and timed inference is a point (off-scale ones as markers)
    assert "p50 4." in page and "warm-up" in page and "/conv2/Conv" in page
    assert "61.4" in page and "1500 MHz" in page  # device state after the run


def test_embedded_json_is_the_report() -> None:
    from edgekit.report.load import parse_report
    import json

    report = deploy_report()
    page = render_html(report)
    match = re.search(r'<script type="application/json" id="edgekit-report">(.*?)</script>', page, re.S)
    assert match
    assert parse_report(json.loads(match.group(1))).model_dump() == report.model_dump()


def test_text_is_escaped() -> None:
    report = deploy_report(model="pkg.mod:make</script><script>alert(1)</script>",
                           warnings=["<b>not bold</b> & friends"])
    page = render_html(report)
    assert "<script>alert(1)" not in page and "&lt;b&gt;not bold&lt;/b&gt; &amp; friends" in page
    assert_self_contained(page)


def test_op_profile_is_optional() -> None:
    page = render_html(deploy_report())
    assert "op-profile" not in ids(page)


def test_no_samples_and_no_memory_still_render() -> None:
    report = deploy_report(latency=LatencySummary(), accuracy=None, parity=None)
    report.memory.peak_rss_mib = None
    page = render_html(report)
    assert "No latency samples" in page and "Memory was not measured" in page
    assert "latency-histogram" not in ids(page)


def test_many_samples_stay_light() -> None:
    page = render_html(deploy_report(n=20_000))
    assert page.count("<circle") < 100  # drawn as bands, not 20 000 points
    assert len(page) < 2_500_000


def test_outliers_do_not_squeeze_the_histogram() -> None:
    report = deploy_report()
    samples = list(report.latency.samples_ms) + [250.0]
    report.latency = LatencySummary(samples_ms=samples, p50_ms=4.2, p90_ms=4.7, p99_ms=5.0)
    page = render_html(report)
    assert "1 sample above" in page


def test_compress_and_export_pages() -> None:
    page = render_html(compress_report())
    assert_self_contained(page)
    assert set(COMPRESS_PLOTS) | {"steps"} <= ids(page)
    assert "structured_prune" in page and "Pareto front" in page
    assert "2. finetune: stopped early" in page
    assert "845 KB → 226 KB" in page  # the artifact's size once the quantize step exported one
    page = render_html(export_report())
    assert_self_contained(page)
    assert "fashion_cnn.fp16.onnx" in page


def test_write_html_is_atomic(tmp_path: Path) -> None:
    out = write_html(deploy_report(), tmp_path / "sub" / "run.html")
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["run.html"]


# --- headless Chromium ------------------------------------------------------------------------------

def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium is not installed: apt-get install -y chromium fonts-dejavu-core (needed by the HTML tests)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def render_in_chromium(page: Path, out: Path) -> tuple[str, str, Path]:
    """Load ``page`` once: (DOM after load, browser log, screenshot). Leaves no process behind."""
    shot = out / f"{page.stem}.png"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={out / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1200,2400",
           f"--screenshot={shot}", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, so all of it can be ended
    try:
        dom, log = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish rendering {page.name} in 90 s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers (zygote, gpu) that outlived the browser
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, log[-2000:]
    return dom, log, shot


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if ":CONSOLE" in line and re.search(r"error|uncaught|failed", line, re.I)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str, Path]]:
    out = tmp_path_factory.mktemp("chromium")
    pages = {"deploy": deploy_report(op_profile=op_profile()), "compress": compress_report()}
    result = {}
    for name, report in pages.items():
        path = write_html(report, out / f"{name}.html")
        result[name] = render_in_chromium(path, out)
    return result


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The control: a page with a JS error shows up in the log this way (else the next test proves nothing)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>not_defined_anywhere()</script></body></html>")
    _, log, _ = render_in_chromium(bad, tmp_path)
    assert console_errors(log), log[-2000:]


@pytest.mark.parametrize(("kind", "plots"), [("deploy", DEPLOY_PLOTS + ("op-profile",)), ("compress", COMPRESS_PLOTS)])
def test_page_renders_in_chromium(rendered: dict[str, tuple[str, str, Path]], kind: str,
                                  plots: tuple[str, ...]) -> None:
    dom, log, shot = rendered[kind]
    assert console_errors(log) == []
    for plot_id in plots:
        assert re.search(rf'<svg class="plot" id="{plot_id}"', dom), f"{plot_id} missing from the loaded DOM"
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 40_000  # a blank 1200×2400 page is a few KB; plots and text are not


@pytest.mark.parametrize("samples", [[4.2], [5.0] * 50, []])
def test_degenerate_samples_render(samples: list[float]) -> None:
    report = deploy_report()
    report.latency = LatencySummary(samples_ms=samples, warmup_ms=[])
    assert_self_contained(render_html(report))


def test_badges_for_emulation_and_throttling() -> None:
    report = deploy_report()
    report.target.kind = "emulated"
    report.latency.representative = False
    report.state_after["throttled"] = {"raw": "0x50005", "now": {"under_voltage": True, "throttled": True},
                                       "since_boot": {"under_voltage": True, "throttled": True}}
    page = render_html(report)
    assert "latency not representative of the device" in page and '<span class="badge bad">throttled</span>' in page
    assert "now: under_voltage, throttled" in page
