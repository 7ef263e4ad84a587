"""Compression: make a torch model smaller and faster, and measure what it cost.

One module per family, each a verb taking ``(model, config, data)`` and returning the model (or
its quantized form) and a ``StepReport`` with before/after figures:

====================  ==================================================================
``prune``             unstructured (masks, ``finalize``) or channel pruning (DepGraph);
                      importance: magnitude, activation, taylor          (prune.py, structured.py)
``quantize``          int8 PTQ (ONNX Runtime / PT2E) and QAT (PT2E)           (quantize.py)
``cluster``           k-means codebooks, log2 (power-of-two) weights          (nonlinear.py)
``distill``           teacher → student, soft labels + feature adapters       (distill.py)
``low_rank``          truncated SVD of Linear and Conv2d layers               (lowrank.py)
``finetune``          the user's data and loss, early stopping, progress      (finetune.py)
``run_recipe``        a validated YAML list of the steps above                (recipe.py)
====================  ==================================================================

Every verb but ``quantize`` is a ``Technique`` (technique.py): the module supplies the transform,
one envelope does the bookkeeping (config, before/after figures, fine-tuning, the report), and a
recipe dispatches each step from one table (``recipe.STEPS``).

``edgekit.compress(model, recipe, data, out_dir)`` runs a recipe and writes ``model.pt`` + a
rebuild manifest + a JSON report (``api.py``); ``load_compressed(out_dir)`` rebuilds the model.
"""

from __future__ import annotations

from edgekit._callable import make_module_callable
from edgekit.compress.api import CompressResult, compress, load_compressed
from edgekit.compress.distill import DistillConfig, FeaturePair
from edgekit.compress.finetune import FinetuneConfig
from edgekit.compress.lowrank import LowRankConfig, low_rank
from edgekit.compress.measure import Figures, measure
from edgekit.compress.nonlinear import ClusterConfig, cluster
from edgekit.compress.prune import PruneConfig, activation_prune, finalize, is_pruned, magnitude_prune
from edgekit.compress.quantize import QuantizeConfig, QuantizedModel
from edgekit.compress.recipe import Recipe, load_recipe, parse_recipe, run_recipe
from edgekit.compress.report import StepReport
from edgekit.compress.structured import replay_channel_pruning


def structured_prune(model, example_inputs, ratio: float, *, data=None, importance: str = "magnitude",
                     ignore=()):  # noqa: ANN001, ANN201 - a thin verb over prune()
    """Remove ``ratio`` of the channels (DepGraph keeps the graph consistent); the head is kept."""
    return prune(model, PruneConfig(structure="channels", ratio=ratio, importance=importance, ignore=list(ignore)),
                 data, example_inputs=example_inputs)


# Importing a submodule sets it as an attribute of this package, so the modules prune, quantize,
# distill and finetune (all imported above) would shadow the verbs of the same names. Binding the
# verbs last makes edgekit.compress.prune(...) the function; ``from edgekit.compress.prune import
# PruneConfig`` still reads the module (from sys.modules).
from edgekit.compress.distill import distill  # noqa: E402
from edgekit.compress.finetune import finetune  # noqa: E402
from edgekit.compress.prune import prune  # noqa: E402
from edgekit.compress.quantize import quantize  # noqa: E402

make_module_callable(__name__, "compress")  # a top-level verb: edgekit.compress(model, recipe, data, out_dir)

__all__ = [
    "ClusterConfig",
    "CompressResult",
    "DistillConfig",
    "FeaturePair",
    "Figures",
    "FinetuneConfig",
    "LowRankConfig",
    "PruneConfig",
    "QuantizeConfig",
    "QuantizedModel",
    "Recipe",
    "StepReport",
    "activation_prune",
    "cluster",
    "compress",
    "distill",
    "finalize",
    "finetune",
    "is_pruned",
    "load_compressed",
    "load_recipe",
    "low_rank",
    "magnitude_prune",
    "measure",
    "parse_recipe",
    "prune",
    "quantize",
    "replay_channel_pruning",
    "run_recipe",
    "structured_prune",
]
