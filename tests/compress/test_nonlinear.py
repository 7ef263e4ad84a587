"""k-means and log2 weight sharing: weights on the codebook, representation size, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress import ClusterConfig, cluster, prune
from edgekit.compress.nonlinear import codebook_arrays, kmeans_1d, log2_round
from edgekit.errors import RecipeError


def _layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_kmeans_1d_finds_separated_clusters():
    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)])
    values = values + 0.01 * torch.randn(100)
    centroids, idx = kmeans_1d(values, 3)
    assert centroids.tolist() == pytest.approx([-1.0, 0.5, 2.0], abs=0.02)
    assert torch.bincount(idx).tolist() == [50, 30, 20]


def test_log2_round_is_on_the_power_of_two_grid():
    w = torch.tensor([0.3, -0.07, 0.0, 1e-6, -0.9])
    q = log2_round(w, bits=4, max_exponent=0)
    nonzero = q[q != 0].abs()
    assert torch.allclose(torch.log2(nonzero), torch.round(torch.log2(nonzero)))
    assert q[2] == 0 and q[3] == 0 and q[1] < 0


def test_kmeans_16_puts_every_layer_on_a_codebook(cnn, data):
    model, report = cluster(cnn, ClusterConfig(clusters=16), data)
    for name, m in _layers(model).items():
        assert torch.unique(m.weight).numel() <= 16, name
    assert report.details["bits_per_weight"] == 4
    assert report.details["representation_ratio"] < 0.2  # 4-bit indices + codebooks vs fp32
    assert report.after.gzip_bytes < 0.5 * report.before.gzip_bytes
    assert report.before.accuracy - report.after.accuracy < 0.08  # no fine-tuning: loose bound
    arrays = codebook_arrays(model, list(report.details["layers"]))
    for name, m in _layers(model).items():
        rebuilt = arrays[f"{name}.codebook"][arrays[f"{name}.indices"]]
        np.testing.assert_array_equal(rebuilt, m.weight.detach().numpy())


def test_kmeans_256_is_nearly_lossless(cnn, data):
    _, report = cluster(cnn, {"clusters": 256}, data)
    assert report.before.accuracy - report.after.accuracy <= 0.005


def test_log2_weights_are_powers_of_two(cnn, data):
    model, report = cluster(cnn, {"method": "log2", "bits": 6}, data)
    for name, m in _layers(model).items():
        w = m.weight.detach()
        nonzero = w[w != 0].abs()
        assert torch.allclose(torch.log2(nonzero), torch.round(torch.log2(nonzero))), name
        assert torch.unique(w).numel() <= 2 * (2 ** 5 - 1) + 1
    assert report.before.accuracy - report.after.accuracy < 0.10  # one significant bit: coarse without fine-tuning
    assert report.details["representation_ratio"] < 0.25


def test_fine_tuning_keeps_the_codebook_and_pruned_zeros(cnn, data):
    model, _ = prune(cnn, {"ratio": 0.5})
    zeros = {n: (m.weight == 0).clone() for n, m in _layers(model).items()}
    model, report = cluster(model, {"clusters": 8, "finetune": {"epochs": 1, "max_batches": 4}}, data)
    for name, m in _layers(model).items():
        assert torch.unique(m.weight).numel() <= 8, name
        assert bool((m.weight[zeros[name]] == 0).all()), name
    assert report.details["finetune"][0]["epoch"] == 1


@pytest.mark.parametrize("config, match", [
    ({"clusters": 1}, "clusters"), ({"clusters": 1000}, "clusters"), ({"method": "lloyd"}, "method"),
    ({"layers": ["nope"]}, "'nope' does not exist"),
])
def test_bad_settings(cnn, config, match):
    with pytest.raises(RecipeError, match=match):
        cluster(cnn, config)
