"""Your model, your data: calibration, parity and the task metric on the user's DATA, in deploy and export.

Real parts only: the bundled example model, real Fashion-MNIST images written as PNGs, the
emulated target (this host's runner under the pi4 limits), ONNX Runtime and LiteRT.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.deploy import DeployOptions, deploy
from edgekit.errors import ExitCode, UsageError

pytestmark = pytest.mark.slow
N_IMAGES = 120

USER_MODELS = '''
import torch
from torch import nn


class TokenClassifier(nn.Module):
    """A BERT-like toy: int64 token ids and a mask in, 4 class scores out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(100, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def tokens():
    return TokenClassifier().eval()


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
'''


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first N_IMAGES Fashion-MNIST test images as PNGs in class subfolders 0..9 (ImageFolder layout)."""
    from PIL import Image

    from edgekit.data.fashion_mnist import FASHION_MNIST_DIR

    root = tmp_path_factory.mktemp("fashion-png")
    with gzip.open(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    for i in range(N_IMAGES):
        folder = root / str(labels[i])
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture()
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "edgekit_user_models.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    return "edgekit_user_models"


def _emulated(**kwargs) -> DeployOptions:  # noqa: ANN003
    return DeployOptions(emulate=True, runs=5, warmup=1, **kwargs)


def test_an_image_folder_scores_what_the_bundled_data_scores(fashion_folder: Path) -> None:
    """Acceptance: --eval DIR of PNGs gives the top-1 of --eval example:fashion-mnist on the same
    images, with no preprocessing flags (the example model carries its own)."""
    by_folder = deploy("example:fashion-cnn", "pi4", _emulated(eval_data=str(fashion_folder)))
    by_name = deploy("example:fashion-cnn", "pi4", _emulated(eval_limit=N_IMAGES))
    assert by_folder.accuracy.n == by_name.accuracy.n == N_IMAGES
    assert by_folder.accuracy.metric == "classification"
    assert by_folder.accuracy.accuracy == by_name.accuracy.accuracy
    assert by_folder.accuracy.reference_accuracy == by_name.accuracy.reference_accuracy
    assert by_folder.data["evaluation"].startswith(fashion_folder.name + "/")
    assert "first 64 evaluation samples" in by_folder.data["parity"]
    manifest = by_folder.artifact.manifest
    assert manifest["preprocess"]["grayscale"] is True and manifest["preprocess"]["mean"]
    assert "Fashion-MNIST train" in manifest["calibration"]["data"]


def test_one_data_for_calibration_and_eval_is_split_without_overlap(fashion_folder: Path) -> None:
    report = deploy("example:fashion-cnn", "pi4", _emulated(calibration=str(fashion_folder),
                                                            eval_data=str(fashion_folder)))
    calibration_n = report.data["calibration_samples"]
    assert calibration_n == N_IMAGES // 4 and report.data["evaluation_samples"] == N_IMAGES - calibration_n
    assert report.accuracy.n == N_IMAGES - calibration_n
    assert "seeded split 0" in report.data["calibration"] and "seeded split 0" in report.data["evaluation"]
    assert any("same data" in note for note in report.data["notes"])
    calibration = report.artifact.manifest["calibration"]
    modes = calibration["int8_modes"]  # the int8 mode was chosen on a held-out quarter of the calibration part
    assert modes["calibration_samples"] + modes["held_out_samples"] == calibration_n
    assert calibration["n_samples"] == modes["calibration_samples"]
    assert [row["mode"] for row in modes["rows"]] == ["full", "dynamic"] and sum(r["chosen"] for r in modes["rows"]) == 1


def test_user_model_at_int8_without_data_is_never_calibrated_on_noise(user_models: str) -> None:
    model = f"{user_models}:small_cnn"
    with pytest.raises(UsageError, match="calibration") as err:
        deploy(model, "pi4", _emulated(input_shape="1,1,28,28", precision="int8"))
    assert "--calibration DATA" in err.value.one_line(cli=True)
    # the profile's own int8 preference falls back to its next non-int8 choice, and says why
    report = deploy(model, "pi4", _emulated(input_shape="1,1,28,28"))
    assert report.artifact.precision != "int8"
    assert "needs calibration data" in report.artifact.chosen_because
    assert report.data["calibration"] is None and "random" in report.data["parity"]
    assert report.accuracy is None


def test_user_model_calibrated_on_user_data_states_it(user_models: str, fashion_folder: Path) -> None:
    from edgekit.data import Preprocess

    from edgekit.errors import DataError

    with pytest.raises(DataError) as err:  # RGB by default: the model takes one channel
        deploy(f"{user_models}:small_cnn", "pi4", _emulated(input_shape="1,1,28,28", calibration=str(fashion_folder)))
    assert "--grayscale" in err.value.one_line(cli=True)
    gray = Preprocess.from_options(grayscale=True)
    report = deploy(f"{user_models}:small_cnn", "pi4", _emulated(input_shape="1,1,28,28", calibration=str(fashion_folder),
                                                                format="onnx", precision="int8", preprocess=gray))
    assert report.artifact.precision == "int8"
    assert report.artifact.manifest["calibration"]["data"].startswith(fashion_folder.name + "/")
    assert report.data["calibration_samples"] == N_IMAGES
    # no --eval and no data of its own: parity on the calibration samples, no metric
    assert report.data["parity"] == "the first 64 calibration samples" and report.accuracy is None


def test_token_id_inputs_from_the_command_line(user_models: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--input NAME:SHAPE:DTYPE:LOW..HIGH describes int64 inputs; unlabeled eval data gets agreement."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 100, size=(40, 12)).astype(np.int64)
    mask = np.ones((40, 12), dtype=np.int64)
    np.savez(tmp_path / "sentences.npz", input_ids=ids, attention_mask=mask)
    report_path = tmp_path / "r.json"
    code = main(["deploy", f"{user_models}:tokens", "--device", "pi4", "--emulate", "--format", "onnx",
                 "--precision", "fp32", "--input", "input_ids:1,12:int64:0..99", "--input", "attention_mask:1,12:int64:1..1",
                 "--eval", str(tmp_path / "sentences.npz"), "--runs", "5", "--report", str(report_path)])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, out
    report = json.loads(report_path.read_text())
    assert [t["dtype"] for t in report["artifact"]["manifest"]["inputs"]] == ["int64", "int64"]
    assert report["accuracy"]["metric"] == "agreement" and report["accuracy"]["n"] == 40
    assert report["accuracy"]["values"]["top1_agreement"] == 1.0  # fp32: the same answers as torch
    assert report["parity"]["max_abs_diff"] < 1e-4
    assert "agreement" in out


def test_export_cli_evaluates_an_image_folder(fashion_folder: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "example:fashion-cnn", "--format", "onnx", "--precision", "int8", "-o", str(tmp_path),
                 "--calibration", str(fashion_folder), "--eval", str(fashion_folder)])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, out
    manifest = json.loads(next(tmp_path.glob("*.manifest.json")).read_text())
    metric = manifest["parity"]["metric"]
    assert metric["metric"] == "classification" and metric["samples"] == N_IMAGES - N_IMAGES // 4
    assert metric["float"]["top1"] - metric["values"]["top1"] <= 0.02  # int8 within 2 of 90 images
    assert "seeded split 0" in manifest["calibration"]["data"]
    assert "classification" in out and "calibration" in out


def test_export_of_a_user_model_at_static_int8_needs_calibration(user_models: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", f"{user_models}:small_cnn", "--input-shape", "1,1,28,28", "--format", "onnx",
                 "--precision", "int8", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "--calibration DATA" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
