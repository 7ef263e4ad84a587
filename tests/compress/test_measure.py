"""Figures: parameters, non-zeros, bytes, gzip, MACs."""

from __future__ import annotations

import torch
from torch import nn

from edgekit.compress.measure import count_macs, count_nonzero, count_params, gzip_bytes, measure, state_bytes


def test_figures_of_a_small_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    assert count_params(model) == 4 * 9 + 4 + 256 * 10 + 10
    assert count_macs(model, (torch.zeros(1, 1, 8, 8),)) == 4 * 64 * 9 + 256 * 10
    assert state_bytes(model) == 4 * count_params(model)
    with torch.no_grad():
        model[3].weight.zero_()
    assert count_nonzero(model) == count_params(model) - 2560
    assert gzip_bytes(model) < state_bytes(model) * 0.3


def test_example_cnn(cnn, example_input):
    figures = measure(cnn, example_input)
    assert figures.params == 98_554  # (the docstring says 98,666: that is the count with conv biases)
    assert figures.macs > 1_000_000 and figures.accuracy is None
    assert set(figures.to_dict()) >= {"params", "nonzero_params", "size_bytes", "gzip_bytes", "macs", "accuracy"}
