"""A third export format in one module, for tests/export/test_registry.py: ``.toy`` files hold the
model's I/O description and its weights' checksum as JSON (fp32 only, no device runtime)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from edgekit.export import calibration as cal
from edgekit.export.base import Artifact, BaseFormat, DeviceRuntime, TensorSpec, Written


class ToyFormat(BaseFormat):
    name = "toy"
    suffix = ".toy"
    precisions = ("fp32",)
    int8_modes = ("toyish",)
    device_runtimes = (DeviceRuntime("toy_runtime", "toy-runtime"),)

    def available(self) -> bool:
        return True

    def versions(self) -> dict[str, str]:
        return {"toy": "1.0"}

    def int8_weight_grid(self, precision: str, options: dict[str, Any] | None) -> str | None:
        return None

    def converts_op(self, overloads: Sequence[Any], model: Any = None, examples: Sequence[Any] | None = None) -> bool:
        return True  # the toy converter takes any op

    def write(self, model: Any, examples: tuple[Any, ...], precision: str, out_path: Path, calibration: Any,
              options: dict[str, Any] | None) -> Written:
        import torch

        with torch.no_grad():
            outputs = cal.flatten_outputs(model(*examples))
        names = cal.input_names(model, len(examples))
        doc = {
            "meta": self.metadata(precision, dict(options or {})),
            "inputs": [{"name": n, "shape": list(e.shape), "dtype": "float32"} for n, e in zip(names, examples)],
            "outputs": [{"name": f"output_{i}", "shape": list(o.shape), "dtype": "float32"} for i, o in enumerate(outputs)],
        }
        out_path.write_text(json.dumps(doc))
        return Written("toy writer", notes=["a toy file: nothing runs it"])

    def inspect(self, path: Path) -> Artifact:
        doc = json.loads(Path(path).read_text())
        return Artifact(path=path, format=self.name, precision=doc["meta"]["precision"],
                        inputs=[TensorSpec(**t) for t in doc["inputs"]], outputs=[TensorSpec(**t) for t in doc["outputs"]],
                        source_sha256=doc["meta"].get("source_sha256"))


FORMAT = ToyFormat()
