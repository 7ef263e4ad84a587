"""Small, fast data and models for the compression tests (Fashion-MNIST subsets, tiny CNNs)."""

from __future__ import annotations

import torch
from torch import nn

from edgekit.data import load_fashion_mnist
from edgekit.data.training import ArrayLoader, TrainData

TRAIN_IMAGES = 2048
VAL_IMAGES = 1000


def small_data(train_images: int = TRAIN_IMAGES, val_images: int = VAL_IMAGES, batch_size: int = 128) -> TrainData:
    """2,048 training images (shifted like the example's training) and 1,000 held-out train images."""
    train = load_fashion_mnist("train", limit=train_images + val_images)
    x, y = train.x, train.y
    return TrainData(
        "fashion-mnist subset",
        ArrayLoader(x[:train_images], y[:train_images], batch_size=batch_size, shuffle=True, shift_pixels=1),
        ArrayLoader(x[train_images:], y[train_images:], batch_size=500),
    )


def small_loaders() -> tuple[ArrayLoader, ArrayLoader]:
    """The DATA factory the CLI tests name (``tests.compress.helpers:small_loaders``)."""
    data = small_data()
    return data.train, data.val


class TinyNet(nn.Module):
    """A non-example model: conv → BN → ReLU → conv (stride 2) → ReLU → pool → linear → linear."""

    def __init__(self, width: int = 12, hidden: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()
