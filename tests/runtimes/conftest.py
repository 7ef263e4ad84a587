"""Tiny models for the runner and emulated-target tests, built once per test session."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

INPUT_SHAPE = (1, 3, 16, 16)


def _tiny_net():
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.fc = nn.Linear(16 * 8 * 8, 10)

        def forward(self, x):
            x = torch.relu(self.c1(x))
            x = torch.relu(self.c2(x))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    return TinyNet().eval()


def _export_onnx(model, path: Path, dynamic_batch: bool) -> Path:
    import torch

    x = torch.randn(*INPUT_SHAPE)
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():  # dynamo=False is deprecated, and 10x faster here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, input_names=["x"],
            output_names=["logits"], dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """(torch model, forward(np.ndarray) -> np.ndarray)."""
    import torch

    model = _tiny_net()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    return model, forward


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runner-models")


@pytest.fixture(scope="session")
def onnx_model(tiny_model, models_dir) -> Path:
    """Fixed batch 1, input "x" (1, 3, 16, 16), output "logits" (1, 10)."""
    return _export_onnx(tiny_model[0], models_dir / "tiny.onnx", dynamic_batch=False)


@pytest.fixture(scope="session")
def onnx_dynamic(tiny_model, models_dir) -> Path:
    """Dynamic batch dimension."""
    return _export_onnx(tiny_model[0], models_dir / "tiny_dyn.onnx", dynamic_batch=True)


@pytest.fixture(scope="session")
def tflite_model(tiny_model, models_dir) -> Path:
    pytest.importorskip("ai_edge_litert")
    litert_torch = pytest.importorskip("litert_torch")
    import torch

    path = models_dir / "tiny.tflite"
    litert_torch.convert(tiny_model[0], (torch.randn(*INPUT_SHAPE),)).export(str(path))
    return path


@pytest.fixture(scope="session")
def tflite_int8(tiny_model, models_dir) -> Path:
    """Full-integer model (int8 input and output) by the PT2E route of stack.md."""
    pytest.importorskip("ai_edge_litert")
    litert_torch = pytest.importorskip("litert_torch")
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = tiny_model[0]
    x = torch.randn(*INPUT_SHAPE)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(16):
            prepared(torch.randn(*INPUT_SHAPE, generator=generator))
    converted = convert_pt2e(prepared, fold_quantize=False)
    path = models_dir / "tiny_int8.tflite"
    litert_torch.convert(
        converted, (x,), quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)
    ).export(str(path))
    return path


def make_alloc_onnx(path: Path, floats: int) -> Path:
    """A tiny .onnx whose inference materialises `floats` float32 values (4 bytes each).

    y = ReduceSum(ConstantOfShape([floats]) + x): the file is a few hundred bytes, the memory
    it needs is chosen by `floats`.
    """
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [floats])
    nodes = [
        helper.make_node("Constant", [], ["shape_c"], value=shape),
        helper.make_node(
            "ConstantOfShape", ["shape_c"], ["big"],
            value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ),
        helper.make_node("Add", ["big", "x"], ["sum"]),
        helper.make_node("ReduceSum", ["sum"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "alloc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def alloc_onnx(tmp_path):
    """Factory: alloc_onnx(mib) -> path of a model that needs about `mib` MiB to run."""

    def make(mib: int) -> Path:
        return make_alloc_onnx(tmp_path / f"alloc_{mib}.onnx", mib * 2**20 // 4)

    return make


@pytest.fixture(scope="session")
def runner():
    """The runner imported the way the host imports it."""
    from edgekit.resources import runner_module

    return runner_module()
