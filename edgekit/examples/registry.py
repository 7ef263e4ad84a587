"""The table of bundled examples: a model factory, its input shape and its eval set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from edgekit.data import FASHION_MNIST_PREPROCESS
from edgekit.data.preprocess import Preprocess
from edgekit.errors import ModelError


@dataclass(frozen=True)
class Example:
    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    dataset: str | None  # a DATA name understood by edgekit.data, e.g. "example:fashion-mnist"
    description: str
    # how images become its inputs (image folders, photos); written into artifact manifests
    preprocess: Preprocess | None = None


def _fashion_cnn() -> torch.nn.Module:
    from edgekit.examples import fashion_cnn

    return fashion_cnn.build(pretrained=True)


EXAMPLES: dict[str, Example] = {
    "fashion-cnn": Example(
        name="fashion-cnn",
        build=_fashion_cnn,
        input_shape=(1, 1, 28, 28),
        dataset="example:fashion-mnist",
        description="3-conv CNN for Fashion-MNIST, 98,554 params, trained weights bundled",
        preprocess=FASHION_MNIST_PREPROCESS,
    ),
}


def get_example(name: str) -> Example:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ModelError(
            f"unknown example {name!r}", f"available: {', '.join('example:' + n for n in EXAMPLES)}"
        ) from None
