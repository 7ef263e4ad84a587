"""Low-rank factorization by truncated SVD.

A Linear ``W (out×in)`` becomes two Linear layers ``in→r`` and ``r→out`` (W ≈ U_r·S_r·V_rᵀ, the
singular values split evenly between the two). A k×k Conv2d becomes a k×k conv to ``r`` channels
followed by a 1×1 conv to the original outputs (the kernel reshaped to ``out × (in·k·k)``). The
rank comes from a ratio of the full rank, a kept-energy threshold (share of Σσ²), explicit
per-layer ranks, or automatically: the smallest rank per layer whose accuracy drop stays within a
budget on validation data.

A factorized layer is an ``nn.Sequential`` of the two factors, so the model stays an ordinary
module that exports anywhere. The report's ``changes`` lists each layer's kind and rank;
``apply_low_rank_structure`` rebuilds that shape on a fresh model so the state_dict loads.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from pydantic import Field, model_validator
from torch import nn

from edgekit.compress.config import StepConfig
from edgekit.compress.finetune import FinetuneConfig, ProgressArg
from edgekit.compress.layers import select_layers
from edgekit.compress.measure import evaluate
from edgekit.compress.report import StepReport
from edgekit.compress.technique import DATA_HINT, Outcome, StepContext, Technique
from edgekit.errors import RecipeError, UsageError

FACTORIZABLE = (nn.Linear, nn.Conv2d)
AUTO_ENERGIES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


class LowRankConfig(StepConfig):
    """Give exactly one of ``rank_ratio``, ``energy``, ``ranks`` or ``accuracy_budget_pt``.

    - ``rank_ratio`` in (0, 1]: rank = ceil(ratio × full rank) for each chosen layer;
    - ``energy`` in (0, 1]: the smallest rank keeping that share of Σσ²;
    - ``ranks``: an explicit rank per layer name;
    - ``accuracy_budget_pt``: automatic; layers are tried largest first, each at the smallest rank
      (from kept energies 0.5 … 0.99) that keeps the accuracy drop, measured on
      ``search_batches`` validation batches, within the budget (before fine-tuning).

    A layer whose factorization would not save parameters is left as is (said in the report).
    """

    rank_ratio: float | None = Field(None, gt=0, le=1)
    energy: float | None = Field(None, gt=0, le=1)
    ranks: dict[str, int] = Field(default_factory=dict)
    accuracy_budget_pt: float | None = Field(None, ge=0, le=100)
    layers: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    search_batches: int = Field(4, ge=1)
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> "LowRankConfig":
        given = [n for n in ("rank_ratio", "energy", "accuracy_budget_pt") if getattr(self, n) is not None]
        if self.ranks:
            given.append("ranks")
        if len(given) != 1:
            raise ValueError("give exactly one of rank_ratio, energy, ranks, accuracy_budget_pt"
                             + (f" (got {', '.join(given)})" if given else ""))
        for name, r in self.ranks.items():
            if r < 1:
                raise ValueError(f"ranks[{name!r}] must be at least 1 (got {r})")
        return self


def _matrix(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach()
    return w if isinstance(module, nn.Linear) else w.reshape(w.shape[0], -1)


def full_rank(module: nn.Module) -> int:
    m = _matrix(module)
    return min(m.shape)


def factorized_params(module: nn.Module, rank: int) -> int:
    out_dim, in_dim = _matrix(module).shape
    bias = module.bias.numel() if module.bias is not None else 0
    return rank * (in_dim + out_dim) + bias


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    share = torch.cumsum(singular_values.pow(2), 0) / singular_values.pow(2).sum().clamp(min=1e-30)
    return int(torch.searchsorted(share, torch.tensor(energy - 1e-9)).item()) + 1


def factorize(module: nn.Module, rank: int) -> nn.Sequential:
    """The two-layer replacement of ``module`` at ``rank`` (weights from the truncated SVD)."""
    _check_factorizable(module, "low_rank")
    u, s, vh = torch.linalg.svd(_matrix(module).float(), full_matrices=False)
    root = s[:rank].sqrt()
    first_w = root.view(-1, 1) * vh[:rank]          # r × in(·k·k)
    second_w = u[:, :rank] * root.view(1, -1)       # out × r
    first, second = empty_factors(module, rank)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if module.bias is not None:
            second.bias.copy_(module.bias.detach())
    return nn.Sequential(first, second)


def empty_factors(module: nn.Module, rank: int) -> tuple[nn.Module, nn.Module]:
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, rank, bias=False), nn.Linear(rank, module.out_features, bias=bias)
    first = nn.Conv2d(module.in_channels, rank, module.kernel_size, stride=module.stride, padding=module.padding,
                      dilation=module.dilation, bias=False)
    return first, nn.Conv2d(rank, module.out_channels, 1, bias=bias)


def _check_factorizable(module: nn.Module, what: str, name: str = "") -> None:
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"):
        raise RecipeError(f"{what}: {name or 'layer'} is a grouped/depthwise or non-zero-padded conv",
                          "factorize dense convolutions and linear layers only; list it in ignore")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    model.set_submodule(name, new)


def apply_low_rank_structure(model: nn.Module, layers: dict[str, dict[str, Any]]) -> nn.Module:
    """Give a fresh ``model`` the factorized shape recorded in a report's ``changes["layers"]``."""
    modules = dict(model.named_modules())
    for name, spec in layers.items():
        if name not in modules:
            raise RecipeError(f"low_rank: layer {name!r} of the manifest does not exist in the model",
                              "rebuild from the architecture the manifest was written for")
        _replace(model, name, nn.Sequential(*empty_factors(modules[name], int(spec["rank"]))))
    return model


def _chosen_ranks(model: nn.Module, modules: dict[str, nn.Module], cfg: LowRankConfig, data: Any,
                  show: Any) -> dict[str, int]:
    if cfg.ranks:
        for name, r in cfg.ranks.items():
            if r > full_rank(modules[name]):
                raise RecipeError(f"low_rank: ranks[{name!r}] = {r} exceeds the layer's full rank {full_rank(modules[name])}",
                                  "give a rank between 1 and the full rank")
        return dict(cfg.ranks)
    if cfg.rank_ratio is not None:
        return {n: max(1, math.ceil(cfg.rank_ratio * full_rank(m))) for n, m in modules.items()}
    if cfg.energy is not None:
        return {n: rank_for_energy(torch.linalg.svdvals(_matrix(m).float()), cfg.energy) for n, m in modules.items()}
    return _auto_ranks(model, modules, cfg, data, show)


def _auto_ranks(model: nn.Module, modules: dict[str, nn.Module], cfg: LowRankConfig, data: Any,
                show: Any) -> dict[str, int]:
    if data is None:
        raise UsageError("low_rank with accuracy_budget_pt needs validation data", DATA_HINT)
    baseline = evaluate(model, data.val, cfg.search_batches)
    ranks: dict[str, int] = {}
    for name in sorted(modules, key=lambda n: -modules[n].weight.numel()):
        original = modules[name]
        svals = torch.linalg.svdvals(_matrix(original).float())
        candidates = sorted({rank_for_energy(svals, e) for e in AUTO_ENERGIES})
        chosen = None
        for r in candidates:
            if factorized_params(original, r) >= original.weight.numel():
                break
            _replace(model, name, factorize(original, r))
            drop = 100 * (baseline - evaluate(model, data.val, cfg.search_batches))
            if drop <= cfg.accuracy_budget_pt:
                chosen = r
                break
        _replace(model, name, original)
        if chosen is not None:
            ranks[name] = chosen
            _replace(model, name, factorize(original, chosen))  # later layers are judged with this one in place
            show.note(f"low_rank: {name} rank {chosen} of {full_rank(original)}")
    for name in ranks:  # restore; the caller factorizes all chosen layers in one place
        _replace(model, name, modules[name])
    return ranks


def _low_rank(model: nn.Module, cfg: LowRankConfig, context: StepContext) -> Outcome:
    include = list(cfg.ranks) if cfg.ranks else cfg.layers
    modules = select_layers(model, FACTORIZABLE, include, cfg.ignore, "low_rank")
    if include is not None:
        for name in include:
            _check_factorizable(modules[name], "low_rank", name)
    else:
        modules = {n: m for n, m in modules.items()
                   if not (isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"))}
    ranks = _chosen_ranks(model, modules, cfg, context.data, context.progress)
    done: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, rank in ranks.items():
        original = modules[name]
        if factorized_params(original, rank) >= original.weight.numel() + (original.bias.numel() if original.bias is not None else 0):
            skipped[name] = f"rank {rank} of {full_rank(original)} would not save parameters"
            continue
        _replace(model, name, factorize(original, rank))
        done[name] = {"kind": "linear" if isinstance(original, nn.Linear) else "conv2d", "rank": rank,
                      "full_rank": full_rank(original), "params_before": sum(p.numel() for p in original.parameters()),
                      "params_after": factorized_params(original, rank)}
    history = context.finetune(model, cfg.finetune, "low_rank", "fine-tune factors")
    details = {"layers": done, "skipped": skipped, "finetune": history}
    notes = [f"{n}: {why}" for n, why in skipped.items()]
    changes = {"type": "low_rank", "layers": {n: {"kind": d["kind"], "rank": d["rank"]} for n, d in done.items()}}
    return Outcome(model, details=details, changes=changes, notes=notes)


LOW_RANK = Technique("low_rank", LowRankConfig, _low_rank)


def low_rank(
    model: nn.Module,
    config: LowRankConfig | dict[str, Any],
    data: Any = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    loss_fn: Callable | None = None,
    progress: ProgressArg = None,
) -> tuple[nn.Module, StepReport]:
    """Factorize the chosen Linear/Conv2d layers of ``model`` in place; optionally fine-tune."""
    return LOW_RANK.run(model, config, data, example_inputs=example_inputs, loss_fn=loss_fn, progress=progress)


__all__ = ["LOW_RANK", "LowRankConfig", "apply_low_rank_structure", "factorize", "full_rank", "low_rank", "rank_for_energy"]
