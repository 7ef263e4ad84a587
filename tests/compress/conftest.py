"""Fixtures for the compression tests: a Fashion-MNIST subset and fresh copies of the models."""

from __future__ import annotations

import pytest
import torch

from tests.compress.helpers import small_data, tiny_net


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data():
    """2,048 training and 1,000 validation images (from the training split)."""
    return small_data()


@pytest.fixture()
def cnn():
    """A fresh copy of the bundled, trained example CNN."""
    from edgekit.examples.fashion_cnn import build

    return build(pretrained=True)


@pytest.fixture()
def tiny():
    return tiny_net()


@pytest.fixture(scope="session")
def example_input():
    return (torch.zeros(1, 1, 28, 28),)
