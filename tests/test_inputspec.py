"""--input NAME:SHAPE[:DTYPE[:LOW..HIGH]] parsing and the inputs edgekit makes up from it."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.inputspec import InputSpec, example_tensors, parse_input, parse_inputs, random_feeds, runner_ranges


def test_bert_style_inputs_parse() -> None:
    ids, mask = parse_inputs(["input_ids:1,128:int64:0..30521", "attention_mask:1,128:int64:1..1"])
    assert ids == InputSpec("input_ids", (1, 128), "int64", 0, 30521)
    assert mask.low == mask.high == 1 and mask.is_integer
    assert parse_input("x:1x3x8x8") == InputSpec("x", (1, 3, 8, 8))
    assert ids.describe() == "input_ids 1×128 int64 in 0..30521"


def test_integer_inputs_stay_in_range_and_are_seeded() -> None:
    spec = parse_input("ids:1,64:int64:5..7")
    a, b = spec.random(100, seed=3), spec.random(100, seed=3)
    assert a.shape == (100, 64) and a.dtype == np.int64
    assert a.min() >= 5 and a.max() <= 7 and set(np.unique(a)) == {5, 6, 7}
    np.testing.assert_array_equal(a, b)
    feeds = random_feeds([spec, parse_input("m:1,64:int64:1..1")], 4)
    assert (feeds["m"] == 1).all() and feeds["ids"].shape == (4, 64)
    assert runner_ranges([spec, parse_input("x:1,3")]) == {"ids": [5.0, 7.0]}


def test_example_tensors_have_the_dtypes() -> None:
    import torch

    ids, x = example_tensors(parse_inputs(["ids:1,8:int64:0..99", "x:1,3"]))
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (1, 8) and int(ids.max()) <= 99
    assert x.dtype == torch.float32


@pytest.mark.parametrize("text", [
    "ids", "ids:", ":1,2", "ids:1,a", "ids:1,0", "ids:1,2:int128", "ids:1,2:int64:9..1", "ids:1,2:int64:1-5",
    "ids:1,2:bool:0..1", "a b:1,2",
])
def test_bad_input_specs_name_the_flag(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_input(text)
    assert "--input" in str(err.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(UsageError, match="more than once"):
        parse_inputs(["x:1,2", "x:1,3"])


def test_runner_draws_benchmark_inputs_in_range(tmp_path) -> None:  # noqa: ANN001
    """The runner's own random inputs honour the job's input_ranges (token ids need their vocabulary)."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.resources import runner_module

    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 256])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, [1, 256])])
    path = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    runner = runner_module()
    session = runner.open_model(str(path), "onnx", threads=1)
    feeds = runner.random_feeds(session, 0, {"ids": [1000, 1003]})
    assert feeds["ids"].min() >= 1000 and feeds["ids"].max() <= 1003
    assert runner.random_feeds(session, 0)["ids"].max() <= 9
