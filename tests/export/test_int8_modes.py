"""choose_int8_mode: every int8 mode exported, judged on held-out calibration samples, one kept.

Real converters and runtimes throughout: the example CNN on real Fashion-MNIST training images,
a tiny transformer encoder (dynamic int8 keeps it closer to float than static), a GRU that
litert-torch's PT2E quantizer cannot take at full-integer int8.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.data import Dataset, load_data
from edgekit.errors import DataError, ExportError, UsageError
from edgekit.export.base import Artifact, sha256_file
from edgekit.export.int8_modes import Int8Row, _pick, choose_int8_mode, estimated_size_ratio, layer_sensitivity

RATIO = 0.30


def _valid(rows: list[Int8Row]) -> list[Int8Row]:
    return [r for r in rows if r.exported and r.size_ratio <= RATIO]


def _check_chosen_is_best(choice) -> Int8Row:
    """The chosen row has the best metric among the files within 0.30× fp32, and ties go to the
    earlier (default) mode."""
    valid = _valid(choice.rows)
    assert valid, [r.to_dict() for r in choice.rows]
    best = max(r.value for r in valid)
    first_best = next(r for r in valid if r.value >= best - 1e-9)
    assert [r for r in choice.rows if r.chosen] == [first_best]
    assert choice.chosen is first_best
    return first_best


def _check_published(choice, out_dir, name: str, suffix: str) -> None:
    artifact = choice.artifact
    assert artifact.path == out_dir / f"{name}{suffix}"
    # only the chosen file and its manifest remain: the candidates' work folder is gone
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([artifact.path.name, artifact.manifest_path.name])
    back = Artifact.from_manifest(artifact.manifest_path)
    assert back.sha256 == sha256_file(artifact.path) == artifact.sha256
    assert back.precision == "int8"
    assert back.size_bytes == choice.chosen.size_bytes
    assert back.parity["inputs"] == "held-out calibration samples"
    assert any(note.startswith("int8 mode chosen by measurement: " + choice.chosen.mode) for note in back.notes)
    json.dumps(choice.to_dict())  # the report can store it as is


def _check_rows(choice, modes: list[str]) -> None:
    assert [r.mode for r in choice.rows] == modes
    ref = choice.reference
    assert ref.mode == "fp32" and ref.size_ratio == 1.0 and ref.size_bytes > 0 and ref.p50_ms > 0
    for row in choice.rows:
        if row.exported:
            assert row.size_bytes > 0
            assert row.size_ratio == pytest.approx(row.size_bytes / ref.size_bytes)
            assert row.metric == ref.metric and row.value is not None
            assert row.p50_ms > 0 and row.max_abs_diff is not None
            assert row.options["int8_mode"] in ("static", "dynamic", "full")
        else:
            assert row.error and row.value is None and not row.chosen


# -- the example CNN --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion():
    from edgekit.models import resolve_model

    resolved = resolve_model("example:fashion-cnn")
    data = load_data("example:fashion-mnist", split="train", limit=256)
    return resolved.module, resolved.example_inputs, data


@pytest.mark.slow
def test_example_cnn_onnx_picks_a_static_mode(fashion, tmp_path):
    model, examples, data = fashion
    out = tmp_path / "out"
    choice = choose_int8_mode(model, examples, "onnx", data, out, "fashion.int8")
    _check_rows(choice, ["static", "static+float", "dynamic"])
    rows = {r.mode: r for r in choice.rows}
    assert choice.calibration_samples == 192 and choice.held_out_samples == 64
    assert choice.reference.metric == "classification"  # the training images carry labels
    assert rows["static"].size_ratio <= RATIO
    # dynamic int8 leaves the convolutions float: estimated too large, not exported while static fits
    assert rows["dynamic"].status == "skipped" and "Conv2d" in rows["dynamic"].error
    # the float variant keeps at most two measured layers float and still fits
    kept = rows["static+float"].options["float_modules"]
    assert 1 <= len(kept) <= 2 and set(kept) <= set(choice.sensitivity)
    assert rows["static+float"].size_ratio <= RATIO
    assert set(choice.sensitivity) == {"features.0.0", "features.1.0", "features.2.0", "classifier.1", "classifier.3"}
    chosen = _check_chosen_is_best(choice)
    assert chosen.mode in ("static", "static+float")
    assert chosen.options["int8_mode"] == "static"
    assert choice.because.startswith(chosen.mode + ": the most accurate") and "64 held-out" in choice.because
    _check_published(choice, out, "fashion.int8", ".onnx")


@pytest.mark.slow
def test_example_cnn_tflite_has_no_float_variant_and_prefers_full_on_ties(fashion, tmp_path):
    model, examples, data = fashion
    choice = choose_int8_mode(model, examples, "tflite", data, tmp_path, "fashion.int8")
    _check_rows(choice, ["full", "dynamic"])  # the TFLite exporter cannot keep named modules float
    rows = {r.mode: r for r in choice.rows}
    assert all(r.exported and r.size_ratio <= RATIO for r in choice.rows)
    chosen = _check_chosen_is_best(choice)
    if rows["full"].value >= rows["dynamic"].value:
        assert chosen.mode == "full"
    assert choice.sensitivity == {}  # measured only for a float variant
    _check_published(choice, tmp_path, "fashion.int8", ".tflite")


# -- a transformer: dynamic int8 wins ------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, d: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyEncoder(nn.Module):
    """Token embeddings in, mean-pooled sentence embedding out (as the measured sentence encoder)."""

    def __init__(self, d: int = 128) -> None:
        super().__init__()
        self.blocks = nn.Sequential(_Block(d), _Block(d))
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.blocks(x)).mean(dim=1)


@pytest.mark.slow
def test_transformer_gets_dynamic_int8(tmp_path):
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    x = np.random.default_rng(0).standard_normal((128, 16, 128)).astype(np.float32)
    x[..., 3] *= 20  # one outlier feature, as real transformer embeddings have
    data = Dataset("tokens", "synthetic", {"x": x})
    choice = choose_int8_mode(model, torch.from_numpy(x[:1]), "onnx", data, tmp_path, "enc.int8", metric="embedding")
    _check_rows(choice, ["static", "static+float", "dynamic"])
    rows = {r.mode: r for r in choice.rows}
    assert choice.reference.metric == "embedding" and choice.reference.value == pytest.approx(1.0, abs=1e-5)
    # static int8 quantizes every LayerNorm, softmax and residual tensor: measurably further from float
    assert rows["dynamic"].value > rows["static"].value + 0.01
    assert rows["static+float"].status in ("ok", "skipped")
    chosen = _check_chosen_is_best(choice)
    assert chosen.mode == "dynamic" and chosen.size_ratio <= RATIO
    _check_published(choice, tmp_path, "enc.int8", ".onnx")


# -- a mode that fails -------------------------------------------------------------------------


class GRUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(16, 64, batch_first=True)
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])


@pytest.mark.slow
def test_failed_mode_is_a_row_and_another_is_chosen(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((64, 10, 16)).astype(np.float32)
    data = Dataset("sequences", "synthetic", {"x": x})
    # litert-torch's PT2E quantizer crashes on nn.GRU (IndexError in its GRU annotator)
    choice = choose_int8_mode(GRUNet().eval(), torch.from_numpy(x[:1]), "tflite", data, tmp_path, "gru.int8")
    _check_rows(choice, ["full", "dynamic"])
    full, dynamic = choice.rows
    assert full.status == "failed" and "gru" in full.error.lower()
    assert dynamic.exported and dynamic.chosen
    assert "full failed" in choice.because
    _check_published(choice, tmp_path, "gru.int8", ".tflite")


# -- a mode that cannot fit the size limit -------------------------------------------------------


class EmbeddingNet(nn.Module):
    """Token ids in: a lookup table that is nearly all the weights (as a sentence encoder's)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4000, 128)  # wide rows: per-row scales stay small beside them
        self.head = nn.Linear(128, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


def test_size_estimate_counts_int8_weights_and_float_leftovers():
    assert estimated_size_ratio(nn.Linear(100, 100)) == pytest.approx((10000 + 4 * 100) / (4 * 10100))
    net = EmbeddingNet()
    assert estimated_size_ratio(net) < RATIO
    assert estimated_size_ratio(net, ("Embedding",)) > 0.9  # the table stays float: no int8 file of that mode fits


@pytest.mark.slow
def test_mode_that_cannot_fit_is_exported_only_when_nothing_else_fits(tmp_path):
    """TFLite full-integer int8 leaves embedding tables float: for a model that is mostly a table,
    it cannot be within 0.30× fp32, so it is not exported while dynamic-range int8 fits."""
    torch.manual_seed(0)
    ids = np.random.default_rng(3).integers(0, 4000, (48, 12)).astype(np.int64)
    data = Dataset("ids", "synthetic", {"ids": ids})
    said: list[str] = []
    choice = choose_int8_mode(EmbeddingNet().eval(), torch.from_numpy(ids[:1]), "tflite", data, tmp_path, "emb.int8",
                              say=said.append)
    full, dynamic = choice.rows
    assert full.status == "skipped" and "estimated" in full.error and full.size_bytes is None
    assert dynamic.chosen and dynamic.size_ratio <= RATIO
    assert any("full not exported first" in text for text in said)
    # with a limit nothing can meet, every mode is exported and the most accurate kept
    tight = choose_int8_mode(EmbeddingNet().eval(), torch.from_numpy(ids[:1]), "tflite", data, tmp_path / "tight",
                             "emb.int8", max_size_ratio=0.01)
    assert [r.status for r in tight.rows] == ["ok", "ok"]
    # equal metrics, neither fits: the smaller file
    if tight.rows[0].value == tight.rows[1].value:
        assert tight.chosen.mode == "dynamic"


# -- a forced mode, bad inputs ------------------------------------------------------------------


def _mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


@pytest.mark.slow
def test_forced_mode_is_not_searched(tmp_path):
    x = np.random.default_rng(2).standard_normal((40, 32)).astype(np.float32)
    choice = choose_int8_mode(_mlp(), torch.from_numpy(x[:1]), "onnx", Dataset("v", "synthetic", {"x": x}),
                              tmp_path, "mlp.int8", options={"int8_mode": "dynamic"})
    assert [(r.mode, r.chosen) for r in choice.rows] == [("dynamic", True)]
    assert choice.because.startswith("dynamic: forced (no search)")
    assert choice.reference.metric == "agreement"  # no labels, logits out
    _check_published(choice, tmp_path, "mlp.int8", ".onnx")
    # a bad option is the caller's error, not a failed mode
    with pytest.raises(UsageError, match="unknown ONNX export option"):
        choose_int8_mode(_mlp(), torch.from_numpy(x[:1]), "onnx", Dataset("v", "synthetic", {"x": x}),
                         tmp_path / "bad", "mlp.int8", options={"bogus": 1})
    assert not (tmp_path / "bad").exists()


def test_bad_calibration_is_refused_before_any_export(tmp_path):
    x = np.zeros((3, 32), np.float32)
    example = torch.zeros(1, 32)
    out = tmp_path / "new"
    with pytest.raises(UsageError, match="Dataset"):
        choose_int8_mode(_mlp(), example, "onnx", x, out, "m")
    with pytest.raises(DataError, match="at least 4"):
        choose_int8_mode(_mlp(), example, "onnx", Dataset("v", "s", {"x": x}), out, "m")
    with pytest.raises(UsageError, match="unknown"):
        choose_int8_mode(_mlp(), example, "coreml", Dataset("v", "s", {"x": x}), out, "m")
    assert not out.exists()


# -- the choice rule and the sensitivity measurement (no export) --------------------------------


def _row(mode: str, value: float | None, ratio: float | None, higher: bool = True, status: str = "ok") -> Int8Row:
    return Int8Row(mode, {}, status=status, value=value, size_ratio=ratio, size_bytes=1, higher_is_better=higher,
                   headline_text="m", error=None if status == "ok" else "boom")


def test_pick_rule():
    # best metric within the size cap; a larger file is excluded however accurate
    rows = [_row("static", 0.90, 0.28), _row("dynamic", 0.99, 0.44), _row("static+float", 0.93, 0.29)]
    assert _pick(rows, RATIO, 64, False)[0].mode == "static+float"
    # ties stay with the earlier (default) mode
    rows = [_row("full", 0.92, 0.27), _row("dynamic", 0.92, 0.26)]
    assert _pick(rows, RATIO, 64, False)[0].mode == "full"
    # lower is better (regression error)
    rows = [_row("static", 0.5, 0.28, higher=False), _row("dynamic", 0.1, 0.27, higher=False)]
    assert _pick(rows, RATIO, 64, False)[0].mode == "dynamic"
    # nothing small enough: the most accurate exported one, and the reason says so
    rows = [_row("full", None, None, status="failed"), _row("dynamic", 0.97, 0.48)]
    best, because = _pick(rows, RATIO, 16, False)
    assert best.mode == "dynamic" and "no mode is within 0.30×" in because and "full failed" in because
    # nothing exported: a typed error naming every failure
    with pytest.raises(ExportError, match="static: boom; dynamic: boom"):
        _pick([_row("static", None, None, status="failed"), _row("dynamic", None, None, status="failed")],
              RATIO, 16, False)


class _Outlier(nn.Module):
    """Input feature 0 is huge but unused (zero weight column): 8-bit input quantization of `first`
    over its range wipes out the other features, while `second` sees an ordinary range."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second, self.unused = nn.Linear(8, 16), nn.Linear(16, 4), nn.Linear(4, 4)
        with torch.no_grad():
            self.first.weight[:, 0] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_layer_sensitivity_ranks_the_layer_int8_hurts_most():
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    x[:, 0] *= 1000
    model = _Outlier().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = layer_sensitivity(model, [x])
    assert list(scores) == ["first", "second"]  # most sensitive first; a layer never called is left out
    assert scores["first"] > 10 * scores["second"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched


class _FixedBatch(nn.Module):
    """Written for batch 1 (``view(1, -1)``): the measurement falls back to the model's batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(1, -1))


def test_layer_sensitivity_feeds_a_fixed_batch_model_its_batch():
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    scores = layer_sensitivity(_FixedBatch().eval(), [x], batch=1)
    assert list(scores) == ["fc"] and 0 < scores["fc"] < 1e-2
    with pytest.raises(RuntimeError):
        layer_sensitivity(_FixedBatch().eval(), [x])


def test_sensitivity_samples_are_bought_by_a_multiply_add_budget():
    from edgekit.export.int8_modes import SENSITIVITY_MACS, SENSITIVITY_MIN_SAMPLES, _sensitivity_samples

    assert _sensitivity_samples(32, 32 * 1000, 5, None) == 32  # a small model keeps every sample
    resnet18 = 1.82e9  # multiply-adds per 224x224 sample, 21 Conv/Linear layers
    n = _sensitivity_samples(32, int(32 * resnet18), 21, None)
    assert SENSITIVITY_MIN_SAMPLES <= n < 32 and n * resnet18 * 21 <= SENSITIVITY_MACS
    assert _sensitivity_samples(32, int(32 * 1e12), 50, None) == SENSITIVITY_MIN_SAMPLES  # never fewer
    assert _sensitivity_samples(32, int(32 * 1e12), 50, 3) == 6  # whole batches of a fixed-batch model
    assert _sensitivity_samples(4, int(4 * 1e12), 50, None) == 4  # never more than there are


def test_onnx_dynamic_is_not_exported_first_for_a_convolutional_model():
    from edgekit.export import get_format

    conv = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3), nn.Flatten(), nn.LazyLinear(2))
    conv(torch.zeros(1, 3, 8, 8))
    float_types = get_format("onnx").int8_float_module_types["dynamic"]
    assert estimated_size_ratio(conv, float_types) > 0.9  # dynamic leaves the convolutions float

    class PaddedConv(nn.Conv2d):  # EfficientNet's "same" padding convs are subclasses
        pass

    conv[0] = PaddedConv(3, 64, 3)
    assert estimated_size_ratio(conv, float_types) > 0.9
    assert estimated_size_ratio(conv, get_format("onnx").int8_float_module_types.get("static", ())) < 0.3
