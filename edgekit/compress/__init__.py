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
    return prune.prune(model, PruneConfig(structure="channels", ratio=ratio, importance=importance, ignore=list(ignore)),
                 data, example_inputs=example_inputs)


# prune, quantize, distill and finetune are their modules, made callable (as edgekit.deploy is):
# edgekit.compress.prune(model, config, data) calls prune.prune, and edgekit.compress.prune.PruneConfig
# still names the class. ``compress`` below is the function; the package is callable too.
from edgekit.compress import distill, finetune, prune, quantize  # noqa: E402

make_module_callable(__name__, "compress")

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
