"""ExecuTorch on the emulated Raspberry Pi 4 (qemu-user aarch64 + real sshd): provision installs the
aarch64 executorch wheel without its export-tool requirements (coremltools has no aarch64 wheel)
plus the torch its runtime links, and an fp32 .pte deploys over SSH and scores what the host scores.

Slow: the aarch64 torch wheel is ~430 MB (downloaded once into the host's wheel cache), and
importing torch under qemu takes a while. It installs into its own site folder, so the session
device's main runtimes are left as the other emulator tests expect them (it needs the bare
device only, so the order of the test files does not matter).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.fixtures.emulated_pi import DEVICE, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.emulator, pytest.mark.executorch, pytest.mark.timeout(2400)]

EVAL_LIMIT = 200
SITE_DIR = "/home/pi/.local/lib/edgekit-site-executorch"


@pytest.fixture(scope="module")
def executorch_site(emulated_pi):
    from edgekit.export import get_format

    if not get_format("executorch").available():
        pytest.skip("exporting executorch needs the [executorch] extra")
    flags = emulated_pi.cli_flags()
    started = time.monotonic()
    done = run_cli("provision", "--device", DEVICE, *flags, "--runtime", "executorch", "--site-dir", SITE_DIR,
                   "--json", timeout=2000)
    if done.returncode != 0:
        pytest.fail(f"`edgekit provision --runtime executorch` failed (rc {done.returncode}): {done.stderr[-3000:]}",
                    pytrace=False)
    result = json.loads(done.stdout)
    result["seconds_here"] = time.monotonic() - started
    return result


def test_provision_brings_torch_and_not_the_export_tools(executorch_site):
    from importlib.metadata import version

    packages = {p["name"]: p for p in executorch_site["packages"]}
    assert packages["executorch"]["version"] == version("executorch")
    assert packages["executorch"]["wheel"].endswith("aarch64.whl")
    assert packages["torch"]["version"] == version("torch").split("+")[0]
    # installed without its own requirements: none of the host-side tools it names
    assert not {"coremltools", "pandas", "scikit-learn", "hydra-core"} & set(packages)
    assert any("torch" in n and "MiB wheel" in n for n in executorch_site["notes"]), executorch_site["notes"]
    assert executorch_site["runtimes"]["executorch"]["available"], executorch_site["runtimes"]["executorch"]


def test_fp32_pte_on_the_emulated_pi_scores_what_the_host_scores(emulated_pi, executorch_site, tmp_path):
    from importlib.metadata import version

    from edgekit.data.plan import eval_set
    from edgekit.deploy import DeployOptions, deploy
    from edgekit.resources import runner_module

    pi = emulated_pi
    options = DeployOptions(host=pi.host, format="executorch", precision="fp32", eval_limit=EVAL_LIMIT, runs=5,
                            warmup=1, threads=1, out_dir=str(tmp_path),
                            ssh=pi.ssh(python=executorch_site["python_command"]))
    report = deploy("example:fashion-cnn", DEVICE, options).model_dump(mode="json")
    assert report["artifact"]["format"] == "executorch" and report["artifact"]["file"].endswith(".pte")
    assert report["device_facts"]["machine"] == "aarch64"
    assert report["runtime"]["name"] == "executorch"
    assert report["runtime"]["version"].split("+")[0] == version("executorch")
    assert report["parity"]["passed"], report["parity"]
    assert report["latency"]["n"] == 5
    # the host's ExecuTorch runtime on the same file and images: fp32 XNNPACK kernels on aarch64
    # and x86 differ in summation order only (1e-6 relative), which can flip an exact near-tie
    session = runner_module().open_model(str(tmp_path / report["artifact"]["file"]), "executorch", threads=1)
    evalset = eval_set("example:fashion-mnist", EVAL_LIMIT)
    name = session.inputs[0]["name"]
    host = sum(int(session.run({name: evalset.x[i: i + 1]})[0].argmax() == evalset.y[i]) for i in range(EVAL_LIMIT))
    assert report["accuracy"]["n"] == EVAL_LIMIT
    assert abs(round(report["accuracy"]["accuracy"] * EVAL_LIMIT) - host) <= 1
    assert np.isfinite(report["latency"]["p50_ms"])
