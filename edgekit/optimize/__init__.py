"""``edgekit optimize``: search the compressions edgekit has for the most accurate model that meets
a device budget, every candidate measured on the target (docs/optimize.md).

=================  ==============================================================
``space.py``       a candidate (prune ratio, low-rank, export) and its recipe
``trial.py``       one trial: compress → export → measure on the target (a deploy)
``history.py``     the study's JSON-lines history; resuming; ``study.json``
``strategies.py``  random (control), NetAdapt (measured, deterministic), TPE (Optuna)
``budget.py``      budgets, the Pareto front, the recommendation
``api.py``         ``optimize(...)``: the order, the final re-score, the output files
=================  ==============================================================
"""

from __future__ import annotations

from edgekit._callable import make_module_callable
from edgekit.optimize.api import BudgetNotMetError, FinalScore, OptimizeResult, format_front, optimize
from edgekit.optimize.budget import Budget, hypervolume, pareto_front
from edgekit.optimize.history import History, TrialRecord
from edgekit.optimize.space import Candidate, SearchSpace
from edgekit.optimize.strategies import STRATEGIES

make_module_callable(__name__, "optimize")  # edgekit.optimize(model, device, ...) as a verb

__all__ = [
    "Budget",
    "BudgetNotMetError",
    "Candidate",
    "FinalScore",
    "History",
    "OptimizeResult",
    "STRATEGIES",
    "SearchSpace",
    "TrialRecord",
    "format_front",
    "hypervolume",
    "optimize",
    "pareto_front",
]
