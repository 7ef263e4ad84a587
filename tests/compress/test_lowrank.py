"""SVD low-rank factorization: rank really reduced, exact at full rank, structure replayable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import LowRankConfig, low_rank
from edgekit.compress.lowrank import apply_low_rank_structure, factorize, rank_for_energy
from edgekit.errors import RecipeError


def test_linear_factorized_to_the_rank(cnn, data):
    model, report = low_rank(cnn, LowRankConfig(rank_ratio=0.2, layers=["classifier.1"]), data)
    first, second = model.classifier[1]
    assert isinstance(first, nn.Linear) and first.out_features == 26 and second.in_features == 26
    product = second.weight @ first.weight
    assert torch.linalg.matrix_rank(product) == 26
    fc_before = 576 * 128 + 128 + 128 * 10 + 10
    fc_after = sum(p.numel() for m in model.classifier.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    assert fc_after <= 0.3 * fc_before
    assert report.changes == {"type": "low_rank", "layers": {"classifier.1": {"kind": "linear", "rank": 26}}}
    assert report.before.accuracy - report.after.accuracy < 0.02


def test_conv_factorization_is_exact_at_full_rank():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, stride=2)
    pair = factorize(conv, 16)  # rank = min(16, 8*3*3) = 16: exact
    x = torch.randn(2, 8, 12, 12)
    torch.testing.assert_close(pair(x), conv(x), atol=1e-4, rtol=1e-4)
    assert pair[0].kernel_size == (3, 3) and pair[0].stride == (2, 2) and pair[1].kernel_size == (1, 1)


def test_energy_picks_the_rank():
    s = torch.tensor([3.0, 2.0, 1.0, 0.1])  # energies 9, 4, 1, 0.01 of 14.01
    assert rank_for_energy(s, 0.6) == 1
    assert rank_for_energy(s, 0.9) == 2
    assert rank_for_energy(s, 0.999) == 3  # 14 / 14.01 = 0.99929
    assert rank_for_energy(s, 0.9995) == 4


def test_energy_rule_and_replay(cnn, data):
    from edgekit.examples.fashion_cnn import build

    model, report = low_rank(cnn, {"energy": 0.8, "layers": ["classifier.1", "features.2.0"]}, data)
    assert set(report.changes["layers"]) <= {"classifier.1", "features.2.0"}
    fresh = apply_low_rank_structure(build(pretrained=False), report.changes["layers"])
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_automatic_ranks_within_budget(tiny, data):
    _, report = low_rank(tiny, {"accuracy_budget_pt": 100.0, "search_batches": 1}, data)
    assert report.details["layers"]  # with an unlimited budget, something is factorized
    assert report.after.params < report.before.params


def test_layers_that_would_grow_are_skipped(cnn):
    model, report = low_rank(cnn, {"rank_ratio": 1.0, "layers": ["classifier.3"]})
    assert "classifier.3" in report.details["skipped"] and isinstance(model.classifier[3], nn.Linear)


@pytest.mark.parametrize("config, match", [
    ({"ranks": {"classifier.1": 0}}, "at least 1"),
    ({"rank_ratio": 0}, "rank_ratio"),
    ({"rank_ratio": 0.5, "energy": 0.9}, "exactly one"),
    ({"ranks": {"classifier.1": 500}}, "exceeds the layer's full rank 128"),
    ({"ranks": {"classifier.7": 4}}, "'classifier.7' does not exist"),
    ({"rank_ratio": 0.5, "layers": ["features.0.1"]}, "is a BatchNorm2d"),
])
def test_impossible_ranks(cnn, config, match):
    with pytest.raises(RecipeError, match=match):
        low_rank(cnn, config)
