"""The example model: a small CNN for Fashion-MNIST (98,554 parameters; the convs have no bias).

Trained by ``python -m edgekit.examples.train_fashion_cnn``; the weights ship beside this file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).with_name("fashion_cnn.pt")
INPUT_SHAPE = (1, 1, 28, 28)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FashionCNN(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(_conv_block(1, c1), _conv_block(c1, c2), _conv_block(c2, c3))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * 3 * 3, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(pretrained: bool = True) -> FashionCNN:
    model = FashionCNN()
    if pretrained:
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()
