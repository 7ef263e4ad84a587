"""Small models covering the layer types the exporters must handle, and seeded data for them.

Every model is randomly initialised from a fixed seed, with non-trivial BatchNorm statistics,
and put in eval mode. Calibration and parity samples come from different seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


class SmallCNN(nn.Module):
    """conv-bn-relu-maxpool ×2 → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SeparableBlock(nn.Module):
    """MobileNet-style: depthwise 3×3 + BN + ReLU6, pointwise 1×1 + BN + ReLU6; stride-2 blocks pad
    TF-'SAME' style with an asymmetric ZeroPad2d (as EfficientNet-Lite ports do)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1)) if stride == 2 else nn.ZeroPad2d(1)
        self.dw = nn.Conv2d(cin, cin, 3, stride=stride, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.dw(self.pad(x))))
        return self.act(self.bn2(self.pw(x)))


class DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(SeparableBlock(8, 16, 1), SeparableBlock(16, 24, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoInTwoOut(nn.Module):
    """An image and a feature vector in; class logits and a 2-value regression out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.vec = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.cls = nn.Linear(16, 5)
        self.reg = nn.Linear(16, 2)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.conv(image).flatten(1), self.vec(features)], dim=1)
        return self.cls(h), self.reg(h)


class ResidualConcat(nn.Module):
    """A residual add and a channel concat between two conv branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.side = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(x + self.res(x))
        z = torch.cat([y, self.side(x)], dim=1)
        return self.head(self.mix(z).flatten(1))


def _make(cls: type, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(cls(), seed)


# name: (factory, example input shapes)
MODELS = {
    "cnn": (lambda: _make(SmallCNN, 1), [(1, 3, 16, 16)]),
    "depthwise": (lambda: _make(DepthwiseNet, 2), [(1, 3, 16, 16)]),
    "mlp": (lambda: _make(MLP, 3), [(1, 32)]),
    "two_io": (lambda: _make(TwoInTwoOut, 4), [(1, 3, 12, 12), (1, 6)]),
    "residual": (lambda: _make(ResidualConcat, 5), [(1, 3, 12, 12)]),
}


def samples(shapes: list[tuple[int, ...]], n: int, seed: int) -> list[np.ndarray]:
    """``n`` samples per input (stacked on axis 0), standard normal from ``seed``."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, *shape[1:])).astype(np.float32) for shape in shapes]


class Case:
    """A model with its example inputs, calibration samples (seed 10) and parity samples (seed 20)."""

    def __init__(self, name: str) -> None:
        factory, shapes = MODELS[name]
        self.name = name
        self.model = factory()
        self.shapes = shapes
        self.examples = tuple(torch.from_numpy(a) for a in samples(shapes, 1, 0))
        self.calibration = samples(shapes, 128, 10)
        self.parity = samples(shapes, 16, 20)


@pytest.fixture(scope="session")
def export_case():
    """``export_case(name)`` → a cached Case for one of MODELS."""
    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            cache[name] = Case(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory):
    """One directory per session for artifacts shared between tests."""
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def exported(export_case, export_dir):
    """``exported(fmt, model, precision, **options)`` → (Case, Artifact), exported once per session."""
    from edgekit.export.api import export

    cache: dict[tuple, tuple] = {}

    def get(fmt: str, name: str, precision: str, **options):
        key = (fmt, name, precision, tuple(sorted(options.items())))
        if key not in cache:
            case = export_case(name)
            tag = "-".join(f"{k}{v}" for k, v in sorted(options.items())).replace("_", "")
            artifact = export(
                case.model,
                case.examples,
                format=fmt,
                precision=precision,
                calibration=case.calibration,
                out_dir=export_dir / fmt,
                name=f"{name}-{precision}{'-' + tag if tag else ''}",
                options=options or None,
                parity_inputs=case.parity,
            )
            cache[key] = (case, artifact)
        return cache[key]

    return get


def check_manifest(case: Case, artifact) -> dict:
    """Assert the manifest beside ``artifact`` describes exactly the file and the model."""
    import json

    from edgekit.export.api import source_sha256
    from edgekit.export.base import Artifact, sha256_file
    from edgekit.export.parity import open_session

    manifest = artifact.manifest_path
    assert manifest.is_file()
    data = json.loads(manifest.read_text())
    assert data["schema_version"] == 1
    assert data["path"] == artifact.path.name
    assert data["size_bytes"] == artifact.path.stat().st_size > 0
    assert data["sha256"] == sha256_file(artifact.path)
    assert data["source_sha256"] == source_sha256(case.model)
    for key in ("edgekit", "torch", "converter"):
        assert data["versions"].get(key), key
    assert data["export_seconds"] > 0
    assert data["parity"]["passed"] is True
    back = Artifact.from_manifest(manifest)
    assert back.sha256 == artifact.sha256 and back.inputs == artifact.inputs and back.outputs == artifact.outputs
    # the I/O specs are what the runner sees when it loads the file
    session = open_session(artifact)
    assert [s["name"] for s in session.inputs] == [t.name for t in artifact.inputs]
    assert [s["name"] for s in session.outputs] == [t.name for t in artifact.outputs]
    assert [s["dtype"] for s in session.inputs] == [t.dtype for t in artifact.inputs]
    assert [list(s["shape"]) for s in session.inputs] == [t.shape for t in artifact.inputs]
    for spec in artifact.inputs + artifact.outputs:
        if spec.dtype in ("int8", "uint8"):
            assert spec.quantization and spec.quantization["scale"] > 0
            assert isinstance(spec.quantization["zero_point"], int)
        else:
            assert spec.quantization is None
    return data
