"""What bounds GPTQ's cost (edgekit.export.rounding): sampled input vectors, block-diagonal H for
wide layers, one H for layers fed the same tensor, nearest where GPTQ does not pay, and a record
that says which layer got what."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.export import rounding
from edgekit.export.api import export
from edgekit.export.rounding import gptq_round


def _on_grid(weight: torch.Tensor) -> bool:
    w = weight.detach().double().reshape(weight.shape[0], -1)
    q = w / (w.abs().amax(1, keepdim=True) / 127)
    return bool(torch.allclose(q, q.round(), atol=1e-3) and torch.allclose(q.abs().amax(1), torch.full((len(q),), 127.0, dtype=q.dtype)))


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(3, 8, 7, stride=2, padding=3), (3, 3, 23, 19)),
    (nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 9, 9)),
    (nn.Conv2d(4, 6, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2), (2, 4, 12, 13)),
    (nn.Conv2d(4, 6, 3, padding="same"), (2, 4, 6, 6)),
])
def test_sampled_input_vectors_are_unfolds_columns(conv: nn.Conv2d, shape: tuple[int, ...]) -> None:
    """The gathered vectors are exactly F.unfold's, padding zeros included, in unfold's order."""
    torch.manual_seed(0)
    x = torch.randn(*shape)
    full = rounding._columns(conv, x, conv.groups)
    keep = full.shape[-1] // 3
    got = rounding._sampled_columns(conv, x, conv.groups, keep, torch.Generator().manual_seed(5))
    oh, ow = rounding._output_size(conv, x)
    pick = torch.randperm(len(x) * oh * ow, generator=torch.Generator().manual_seed(5))[:keep]
    torch.testing.assert_close(got, full[:, :, pick])


def test_input_vectors_are_capped_per_column_and_draws_are_reproducible() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(64, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 4)).eval()
    calibration = np.random.default_rng(2).standard_normal((64, 64, 32, 32)).astype(np.float32)
    stats = rounding._input_statistics(model, {"0": model[0]}, {"x": calibration})
    # 64 samples × 1024 positions = 65,536 vectors of 576 columns: H from 64 per column
    cap = rounding.VECTORS_PER_COLUMN * 576
    assert stats["0"].subsampled and abs(stats["0"].count - cap) <= 8
    a, summary = gptq_round(model, (torch.zeros(1, 64, 32, 32),), calibration)
    b, _ = gptq_round(model, (torch.zeros(1, 64, 32, 32),), calibration)
    assert summary.to_dict()["subsampled_layers"] == 1
    assert torch.equal(a[0].weight, b[0].weight)  # the same export twice gives the same file


def test_wide_layers_get_a_block_diagonal_h_of_whole_channels() -> None:
    conv = nn.Conv2d(256, 8, 3)  # 2304 columns: two blocks of 128 channels × 9
    assert rounding._column_blocks(conv) == [(0, 1152), (1152, 2304)]
    assert rounding._column_blocks(nn.Linear(2400, 4)) == [(0, 800), (800, 1600), (1600, 2400)]
    assert rounding._column_blocks(nn.Linear(1152, 4)) == [(0, 1152)]
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 2400), nn.ReLU(), nn.Linear(2400, 16)).eval()
    calibration = np.random.default_rng(4).standard_normal((512, 64)).astype(np.float32)
    rounded, summary = gptq_round(model, (torch.zeros(1, 64),), calibration)
    assert summary.rounded == ["0", "2"] and summary.to_dict()["blocked_layers"] == 1
    assert _on_grid(rounded[2].weight)
    assert summary.output_error_ratio < 0.95


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2), dim=-1)
        return self.out((att @ self.v(x)).mean(1))


def test_layers_fed_the_same_tensor_share_one_h(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = rounding._products
    monkeypatch.setattr(rounding, "_products", lambda module, *a: calls.append(type(module).__name__) or real(module, *a))
    torch.manual_seed(5)
    model = _Attention().eval()
    calibration = np.random.default_rng(6).standard_normal((16, 10, 16)).astype(np.float32)
    layers = rounding._layers(model, ())
    stats = rounding._input_statistics(model, layers, {"x": calibration})
    batches = 16 // rounding.BATCH
    assert len(calls) == 2 * batches  # q/k/v's input once, out's once, per batch
    assert stats["q"].key == stats["k"].key == stats["v"].key != stats["out"].key
    torch.testing.assert_close(stats["q"].hessians()[0], stats["v"].hessians()[0])


def test_layers_where_gptq_does_not_pay_keep_nearest_and_say_so(tmp_path) -> None:
    """With independent inputs (H diagonal) GPTQ has no error to spread: it cannot beat
    round-to-nearest, so the layer is left to the converter and the record says why."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    calibration = np.repeat(np.eye(8, dtype=np.float32) * 3, 4, axis=0)  # one-hot inputs: E[x xᵀ] diagonal
    rounded, summary = gptq_round(model, (torch.zeros(1, 8),), calibration)
    assert "0" not in summary.rounded and "GPTQ no better than round-to-nearest" in summary.skipped["0"]
    assert torch.equal(rounded[0].weight, model[0].weight)  # untouched: the converter rounds it
    art = export(model, torch.zeros(1, 8), "onnx", "int8", calibration=calibration, out_dir=tmp_path)
    record = art.calibration["weight_rounding"]
    assert sorted(record["rounded"] + list(record.get("skipped", {}))) == ["0", "2"]
    assert record["layers"] == len(record["rounded"])
