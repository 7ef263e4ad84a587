"""Knowledge distillation: a teacher trains a smaller student, with any two modules.

The loss per batch is

    α · T² · KL(softmax(teacher/T) ‖ softmax(student/T))  +  (1 − α) · CE(student, labels)
      + Σ_pairs  w · MSE(adapter(student feature), teacher feature)      (or attention maps)

The teacher sees the same (augmented) batch as the student, in eval mode and without gradients.

Unlabeled data is a transfer set: the teacher labels it. A sample without a label (target
``UNLABELED``, -1) is taught by the soft loss alone (weight 1, no cross-entropy). The transfer
set is the distill step's ``transfer:`` DATA (read like ``--data``: images with the same
preprocessing), or ``--data`` itself when that is unlabeled. With ``transfer:`` and labelled
``--data``, each epoch interleaves the transfer set with the labelled training split (the student
sees a few labels and many teacher-labelled samples), and the labelled validation split measures
accuracy; with unlabeled data only, nothing measures accuracy (the report says so).
Feature pairs name a student module and a teacher module (``named_modules`` names). With the
``mse`` loss, where their widths differ a learned adapter maps the student's feature to the
teacher's width (a 1×1 conv for N×C×H×W features, a linear layer for N×C), and a spatial size
mismatch is resolved by adaptive average pooling; adapters train with the student and are
dropped afterwards. The ``attention`` loss compares spatial attention maps instead (no adapter).

In a recipe the student comes from a factory (``student: pkg.module:fn`` with ``student_kwargs``),
which the manifest records, so a distilled model is rebuilt without pickles.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgekit.compress.config import StepConfig
from edgekit.compress.finetune import FinetuneConfig, ProgressArg, train
from edgekit.compress.layers import require_layers
from edgekit.compress.measure import count_params
from edgekit.compress.report import StepReport
from edgekit.compress.technique import Outcome, StepContext, Technique
from edgekit.data.training import UNLABELED
from edgekit.errors import RecipeError
from edgekit.refs import import_ref


class FeaturePair(StepConfig):
    """A student module's output taught by a teacher module's output.

    ``loss: mse`` (FitNets) regresses the student feature, through a learned adapter where widths
    differ, onto the teacher feature. ``loss: attention`` (Zagoruyko & Komodakis) compares spatial
    attention maps (the channel mean of squared activations, L2-normalized per sample; the squared
    distance summed over positions): no adapter, any widths, N×C×H×W features only.
    """

    student: str
    teacher: str
    weight: float = Field(1.0, ge=0)
    loss: Literal["mse", "attention"] = "mse"


class DistillConfig(StepConfig):
    """Temperature ``T``, soft-loss weight ``alpha``, optional feature pairs, and the training run.

    ``student``/``student_kwargs`` name the student's factory (required in a recipe; the Python
    API takes the student module itself). ``training`` is the optimizer and schedule.
    ``mixup`` > 0 distils on mixed batches (function matching): each batch is blended with a
    shuffled copy of itself by λ ~ Beta(mixup, mixup); teacher and student see the same blend, and
    the hard-label loss is λ-weighted over the two labels. It helps where a teacher has memorized
    its training images (answers them almost one-hot, so plain soft targets add little); the
    bundled example teacher has not (as soft on its training images as on the test set), and on
    it mixup did not help the benchmark's student.
    ``logit_loss: mse`` regresses the student's logits onto the teacher's (mean squared difference
    per sample, summed over classes; Kim et al., IJCAI 2021) instead of the softened KL, and the
    temperature is then unused. ``standardize_logits`` z-scores each sample's teacher and student
    logits first (Sun et al., CVPR 2024), so a small student matches the teacher's ranking of the
    classes rather than the scale of its logits. ``training.augment`` (per-sample shifts/flips) is
    applied before the teacher and the student see a batch: both see the same view.
    ``transfer`` names unlabeled DATA (a flat folder of images, an ``.npz`` without ``y``, ...;
    labels it has are not used) the student is taught on by the teacher, besides the labelled
    training split; ``transfer_limit`` keeps at most that many of its samples (a seeded choice of
    a folder's images, the first ones of arrays).
    ``teacher: original`` (a recipe, instead of ``student``) fine-tunes the current model by
    distillation from the model the recipe started from: prune, then recover from the unpruned
    model's soft labels. Pruning masks stay in place while it trains.
    """

    student: str | None = None
    teacher: Literal["original"] | None = None
    student_kwargs: dict[str, Any] = Field(default_factory=dict)
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1)
    features: list[FeaturePair] = Field(default_factory=list)
    mixup: float = Field(0.0, ge=0, le=10)
    standardize_logits: bool = False
    logit_loss: Literal["kl", "mse"] = "kl"
    training: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(epochs=5, lr=3e-3, schedule="onecycle"))
    transfer: str | None = Field(None, min_length=1)
    transfer_limit: int | None = Field(None, ge=1)


def build_student(config: DistillConfig) -> nn.Module:
    if not config.student:
        raise RecipeError("distill: student is required in a recipe", "name a factory, e.g. student: mypkg.models:small_cnn")
    factory = import_ref(config.student, RecipeError, what="distill.student")
    try:
        student = factory(**config.student_kwargs)
    except TypeError as exc:
        raise RecipeError(f"distill: {config.student}({', '.join(config.student_kwargs)}) failed: {exc}",
                          "check student_kwargs against the factory's parameters") from None
    if not isinstance(student, nn.Module):
        raise RecipeError(f"distill: {config.student} returned {type(student).__name__}, not a torch.nn.Module",
                          "return the student model from the factory")
    return student


class _Features:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        self.values: dict[str, torch.Tensor] = {}
        self.hooks = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.values[name] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


class _Adapter(nn.Module):
    """Maps a student feature to the teacher feature's shape (width by 1×1 conv/linear, size by pooling)."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        super().__init__()
        self.size = tuple(teacher_shape[2:]) if len(teacher_shape) > 2 else None
        cs, ct = student_shape[1], teacher_shape[1]
        if len(student_shape) != len(teacher_shape):
            raise RecipeError(f"distill: a feature pair has ranks {len(student_shape)} and {len(teacher_shape)}",
                              "pair layers whose outputs have the same number of dimensions")
        if cs == ct:
            self.proj: nn.Module = nn.Identity()
        elif len(student_shape) == 4:
            self.proj = nn.Conv2d(cs, ct, 1, bias=False)
        elif len(student_shape) == 2:
            self.proj = nn.Linear(cs, ct, bias=False)
        else:
            raise RecipeError(f"distill: cannot adapt features of shape {tuple(student_shape)}",
                              "pair 2-D (N×C) or 4-D (N×C×H×W) features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            x = F.adaptive_avg_pool2d(x, self.size)
        return x


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Per-sample spatial attention: mean over channels of a², flattened, L2-normalized."""
    return F.normalize(feature.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if student.dim() != 4 or teacher.dim() != 4:
        raise RecipeError("distill: attention transfer needs N×C×H×W features", "use loss: mse for N×C features")
    if student.shape[2:] != teacher.shape[2:]:
        student = F.adaptive_avg_pool2d(student, teacher.shape[2:])
    return (attention_map(student) - attention_map(teacher)).pow(2).sum(1).mean()


def standardize(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each row's logits minus their mean, divided by their standard deviation."""
    return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + eps)


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
              standardized: bool = False) -> torch.Tensor:
    """T² · KL(teacher ‖ student) on temperature-softened distributions (Hinton et al.); with
    ``standardized`` both sides' logits are z-scored per sample first."""
    t = temperature
    if standardized:
        student_logits, teacher_logits = standardize(student_logits), standardize(teacher_logits)
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


def _soft_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """The soft loss of each sample (its mean over a batch is what ``soft_loss``/the MSE give)."""
    if cfg.standardize_logits:
        student_logits, teacher_logits = standardize(student_logits), standardize(teacher_logits)
    if cfg.logit_loss == "mse":
        return (student_logits - teacher_logits).pow(2).sum(1)
    t = cfg.temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="none", log_target=True).sum(1) * (t * t)


def logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, cfg: DistillConfig,
               lam: float = 1.0, perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss, soft, hard)`` of a batch: α·soft + (1 − α)·hard for labelled samples, the soft loss
    alone for unlabeled ones (target ``UNLABELED``); ``hard`` is None when no sample has a label.
    ``lam``/``perm`` are mixup's: a blended sample is labelled when both of its sources are."""
    labeled = (y != UNLABELED) if y.dim() == 1 and not y.is_floating_point() else None
    if perm is not None and labeled is not None:
        labeled = labeled & labeled[perm]
    if labeled is None or bool(labeled.all()):  # every sample labelled: the classic loss, as before
        if cfg.logit_loss == "mse":
            s_l, t_l = student_logits, teacher_logits
            if cfg.standardize_logits:
                s_l, t_l = standardize(student_logits), standardize(teacher_logits)
            soft = (s_l - t_l).pow(2).sum(1).mean()
        else:
            soft = soft_loss(student_logits, teacher_logits, cfg.temperature, cfg.standardize_logits)
        hard = F.cross_entropy(student_logits, y)
        if perm is not None:
            hard = lam * hard + (1 - lam) * F.cross_entropy(student_logits, y[perm])
        return cfg.alpha * soft + (1 - cfg.alpha) * hard, soft, hard
    soft_each = _soft_per_sample(student_logits, teacher_logits, cfg)
    hard_each = F.cross_entropy(student_logits, y.clamp(min=0), reduction="none")  # unlabeled rows: discarded below
    if perm is not None:
        hard_each = lam * hard_each + (1 - lam) * F.cross_entropy(student_logits, y[perm].clamp(min=0), reduction="none")
    each = torch.where(labeled, cfg.alpha * soft_each + (1 - cfg.alpha) * hard_each, soft_each)
    hard = hard_each[labeled].mean() if bool(labeled.any()) else None
    return each.mean(), soft_each.mean(), hard


def _training_data(cfg: DistillConfig, data: Any, example_inputs: Sequence[torch.Tensor]) -> tuple[Any, Any, list[dict[str, Any]]]:
    """``(training batches, validation batches or None, transfer sets)`` for ``data`` and ``cfg.transfer``."""
    from edgekit.data.training import ArrayLoader, MixedLoader, transfer_set

    sources, transfers = [], []
    if cfg.transfer:
        batch_size = data.train.batch_size if isinstance(data.train, ArrayLoader) else 128
        loader, described = transfer_set(cfg.transfer, preprocess=data.preprocess, limit=cfg.transfer_limit,
                                         input_shapes=[tuple(t.shape) for t in example_inputs], batch_size=batch_size)
        sources.append(loader)
        transfers.append({"data": described, "samples": len(loader.x)})
    if data.labeled:
        sources.append(data.train)
    else:  # unlabeled --data is a transfer set too
        sources.append(data.unlabeled)
        transfers.append({"data": data.name, "samples": len(data.unlabeled.x)})
    batches = sources[0] if len(sources) == 1 else MixedLoader(*sources)
    return batches, (data.val if data.labeled else None), transfers


class _DistillLoss:
    """The per-batch loss (soft + hard + feature terms) of ``student`` taught by ``teacher``; keeps running means."""

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: DistillConfig, s_feats: _Features,
                 t_feats: _Features, adapters: nn.ModuleList) -> None:
        self.student, self.teacher, self.cfg = student, teacher, cfg
        self.s_feats, self.t_feats, self.adapters = s_feats, t_feats, adapters
        self.mix = torch.distributions.Beta(cfg.mixup, cfg.mixup) if cfg.mixup > 0 else None
        self.parts = {"soft": 0.0, "hard": 0.0, "hard_n": 0, "feature": 0.0, "n": 0}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lam, perm = 1.0, None
        if self.mix is not None:
            lam = float(self.mix.sample())
            perm = torch.randperm(x.shape[0])
            x = lam * x + (1 - lam) * x[perm]
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = self.student(x)
        loss, soft, hard = logit_loss(s_logits, t_logits, y, self.cfg, lam, perm)
        feat = torch.zeros(())
        for pair, adapter in zip(self.cfg.features, self.adapters):
            f_s, f_t = self.s_feats.values[pair.student], self.t_feats.values[pair.teacher].detach()
            if pair.loss == "attention":
                feat = feat + pair.weight * attention_loss(f_s, f_t)
            else:
                feat = feat + pair.weight * F.mse_loss(adapter(f_s), f_t)
        parts = self.parts
        parts["soft"] += float(soft.detach())
        if hard is not None:
            parts["hard"] += float(hard.detach())
            parts["hard_n"] += 1
        parts["feature"] += float(feat.detach())
        parts["n"] += 1
        return loss + feat

    def means(self) -> dict[str, float | None]:
        parts = self.parts
        return {"mean_soft_loss": parts["soft"] / parts["n"],
                "mean_hard_loss": parts["hard"] / parts["hard_n"] if parts["hard_n"] else None,
                "mean_feature_loss": parts["feature"] / parts["n"]}


def _train_student(student: nn.Module, teacher: nn.Module, cfg: DistillConfig, batches: Any, val: Any,
                   context: StepContext) -> list[dict[str, Any]]:
    """Train ``student`` from the frozen ``teacher`` (feature hooks and adapters only for this run)."""
    teacher.eval()
    trainable = [p for p in teacher.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    s_feats = _Features(student, [p.student for p in cfg.features])
    t_feats = _Features(teacher, [p.teacher for p in cfg.features])
    try:
        probe = context.data.sample_inputs(2)
        student.eval()
        with torch.no_grad():
            student(probe)
            teacher(probe)
        adapters = nn.ModuleList(
            _Adapter(s_feats.values[p.student].shape, t_feats.values[p.teacher].shape) if p.loss == "mse" else nn.Identity()
            for p in cfg.features)
        batch_loss = _DistillLoss(student, teacher, cfg, s_feats, t_feats, adapters)
        history = train(student, batches, val, cfg.training, batch_loss,
                        extra_params=list(adapters.parameters()), progress=context.progress, label="distill")
        if batch_loss.parts["n"]:
            history.append(batch_loss.means())
    finally:
        s_feats.close()
        t_feats.close()
        for p in trainable:
            p.requires_grad_(True)
    student.eval()
    return history


def _pair(model: nn.Module, cfg: DistillConfig, context: StepContext) -> tuple[nn.Module, nn.Module]:
    """(student, teacher): a new student taught by ``model``, or (``teacher: original``) ``model``
    taught by the model its recipe started from."""
    if cfg.teacher == "original":
        if context.original is None:
            raise RecipeError("distill: teacher: original names the model a recipe starts from",
                              "use it in a recipe (edgekit compress --recipe), or pass the teacher to distill()")
        return model, context.original
    return (context.student if context.student is not None else build_student(cfg)), model


def _distill(model: nn.Module, cfg: DistillConfig, context: StepContext) -> Outcome:
    student, teacher = _pair(model, cfg, context)
    require_layers(student, [p.student for p in cfg.features], (nn.Module,), "distill (student)")
    require_layers(teacher, [p.teacher for p in cfg.features], (nn.Module,), "distill (teacher)")
    batches, val, transfers = _training_data(cfg, context.data, context.example_inputs)
    history = _train_student(student, teacher, cfg, batches, val, context)
    changes = None
    if cfg.student:
        changes = {"type": "student", "factory": cfg.student, "kwargs": dict(cfg.student_kwargs)}
    student_params = count_params(student)
    teacher_params = count_params(teacher)
    details = {"history": history, "teacher_params": teacher_params, "student_params": student_params,
               "param_ratio": student_params / max(teacher_params, 1)}
    notes = []
    if transfers:
        details["transfer"] = transfers
    if val is None:
        notes.append(f"{context.data.name} has no labels: the student learned from the teacher alone, and no "
                     "accuracy was measured (pass labelled --data, and the unlabeled set as the step's transfer:)")
    return Outcome(student, details=details, changes=changes, notes=notes)


DISTILL = Technique("distill", DistillConfig, _distill, needs_data=True, no_data="distill needs training data",
                    unlabeled=True, sample_inputs=True)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: Any,
    config: DistillConfig | dict[str, Any] | None = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    progress: ProgressArg = None,
) -> tuple[nn.Module, StepReport]:
    """Train ``student`` from ``teacher`` on ``data``; the report compares teacher and student.

    ``data`` is a TrainData or DATA reference, labelled or not (unlabeled data is a transfer set:
    the student learns from the teacher alone, and no accuracy is measured).
    """
    return DISTILL.run(teacher, config, data, example_inputs=example_inputs, progress=progress, student=student)


__all__ = ["DISTILL", "DistillConfig", "FeaturePair", "attention_loss", "attention_map", "build_student", "distill", "logit_loss",
           "soft_loss", "standardize"]
