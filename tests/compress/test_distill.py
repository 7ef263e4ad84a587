"""Knowledge distillation: the KD loss falls, adapters bridge widths, any teacher/student pair works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.compress import DistillConfig, distill
from edgekit.compress.distill import _Adapter, soft_loss
from edgekit.errors import RecipeError, UsageError
from tests.compress.helpers import TinyNet


def _student():
    from edgekit.examples.fashion_cnn import FashionCNN

    torch.manual_seed(0)
    return FashionCNN(widths=(4, 8, 16), hidden=32)


def test_soft_loss_is_zero_for_equal_logits():
    logits = torch.randn(8, 10)
    assert float(soft_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_loss(logits, -logits, 4.0)) > 0


def test_adapters_bridge_widths_and_sizes():
    conv = _Adapter(torch.Size([2, 8, 14, 14]), torch.Size([2, 32, 7, 7]))
    assert isinstance(conv.proj, nn.Conv2d) and conv.proj.kernel_size == (1, 1)
    assert conv(torch.randn(2, 8, 14, 14)).shape == (2, 32, 7, 7)
    lin = _Adapter(torch.Size([2, 16]), torch.Size([2, 128]))
    assert isinstance(lin.proj, nn.Linear)
    assert isinstance(_Adapter(torch.Size([2, 8, 7, 7]), torch.Size([2, 8, 7, 7])).proj, nn.Identity)


def test_kd_loss_decreases_with_feature_pairs(cnn, data):
    cfg = DistillConfig(temperature=4, alpha=0.7,
                        features=[{"student": "features.2", "teacher": "features.2", "weight": 0.5},
                                  {"student": "classifier.2", "teacher": "classifier.2", "weight": 0.1}],
                        training={"epochs": 3, "lr": 3e-3, "schedule": "onecycle"})
    student, report = distill(_student(), cnn, data, cfg)
    losses = [r["train_loss"] for r in report.details["history"] if "train_loss" in r]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]
    assert report.details["param_ratio"] < 0.1
    assert report.after.accuracy > 0.5  # 3 short epochs on 2k images: well above chance
    assert report.before.accuracy == pytest.approx(report.before.accuracy)  # the teacher's figure
    assert report.details["history"][-1]["mean_feature_loss"] > 0
    assert all(p.requires_grad for p in cnn.parameters())  # the teacher is handed back unchanged


def test_any_teacher_and_student(data):
    torch.manual_seed(0)
    teacher, student = TinyNet(width=16, hidden=64), TinyNet(width=4, hidden=16)
    cfg = {"features": [{"student": "body.0", "teacher": "body.0"}], "training": {"epochs": 1, "max_batches": 4}}
    student, report = distill(student, teacher, data, cfg)
    assert report.details["student_params"] < report.details["teacher_params"]


def test_errors(cnn, data):
    with pytest.raises(RecipeError, match=r"distill \(student\): layer 'features.9' does not exist"):
        distill(_student(), cnn, data, {"features": [{"student": "features.9", "teacher": "features.2"}]})
    with pytest.raises(RecipeError, match="alpha"):
        distill(_student(), cnn, data, {"alpha": 1.5})
    with pytest.raises(UsageError, match="needs training data"):
        distill(_student(), cnn, None)


def test_attention_transfer_loss():
    from edgekit.compress.distill import attention_loss

    t = torch.rand(4, 32, 7, 7)
    assert float(attention_loss(t[:, :8] * 3, t[:, :8])) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(attention_loss(torch.rand(4, 8, 14, 14), t)) > 0  # pooled to 7×7, any widths
    with pytest.raises(RecipeError, match="N×C×H×W"):
        attention_loss(torch.rand(4, 8), torch.rand(4, 8))


def test_mixup_distillation_runs(data):
    torch.manual_seed(0)
    teacher, student = TinyNet(width=8, hidden=32), TinyNet(width=4, hidden=16)
    _, report = distill(student, teacher, data, {"mixup": 0.4, "training": {"epochs": 1, "max_batches": 3}})
    assert report.details["history"][0]["train_loss"] > 0
    with pytest.raises(RecipeError, match="mixup"):
        distill(TinyNet(), teacher, data, {"mixup": -1})


def test_standardized_soft_loss_ignores_logit_scale():
    from edgekit.compress.distill import standardize

    t = torch.randn(8, 10)
    z = standardize(t)
    assert torch.allclose(z.mean(1), torch.zeros(8), atol=1e-5) and torch.allclose(z.std(1), torch.ones(8), atol=1e-4)
    assert float(soft_loss(3 * t + 1, t, 2.0, standardized=True)) == pytest.approx(0.0, abs=1e-5)
    assert float(soft_loss(3 * t + 1, t, 2.0)) > 0.1


def test_augment_batch_shifts_and_flips_per_sample():
    from edgekit.compress.finetune import AugmentConfig, augment_batch

    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    assert augment_batch(x, AugmentConfig()) is x
    torch.manual_seed(0)
    flipped = [augment_batch(x, AugmentConfig(flip=True)) for _ in range(8)]
    for out in flipped:
        for i in range(2):
            assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    assert any(not torch.equal(out, x) for out in flipped)
    out = augment_batch(x, AugmentConfig(shift=1))
    assert out.shape == x.shape
    with pytest.raises(RecipeError, match=r"training\.augment\.shift"):
        DistillConfig.parse({"training": {"augment": {"shift": -1}}}, "distill")


def test_distill_options_run(data):
    torch.manual_seed(0)
    teacher = TinyNet(width=8, hidden=32)
    for options in ({"standardize_logits": True}, {"logit_loss": "mse", "alpha": 1.0},
                    {"training": {"epochs": 1, "max_batches": 2, "augment": {"shift": 2, "flip": True}}}):
        cfg = {"training": {"epochs": 1, "max_batches": 2}} | options
        _, report = distill(TinyNet(width=4, hidden=16), teacher, data, cfg)
        assert report.details["history"][0]["train_loss"] > 0
    with pytest.raises(RecipeError, match="logit_loss"):
        distill(TinyNet(), teacher, data, {"logit_loss": "l1"})


def test_a_recipe_fine_tunes_a_pruned_model_by_distillation_from_its_input(cnn, data):
    """``teacher: original``: the pruned model is the student, the model the recipe got is the teacher."""
    from edgekit.compress.measure import count_params
    from edgekit.compress.recipe import run_recipe

    before = count_params(cnn)
    recipe = [{"prune": {"structure": "channels", "ratio": 0.5}},
              {"distill": {"teacher": "original", "training": {"epochs": 1, "lr": 3e-3, "max_batches": 8}}}]
    torch.manual_seed(0)
    model, reports = run_recipe(cnn, recipe, data, example_inputs=(torch.zeros(1, 1, 28, 28),))
    distilled = reports[1]
    assert count_params(model) == distilled.details["student_params"] < 0.5 * before  # the student stays pruned
    assert distilled.details["teacher_params"] == before  # taught by the unpruned model
    assert distilled.after.accuracy > distilled.before.accuracy  # the pruned model recovered from the teacher


def test_teacher_original_needs_a_recipe_and_excludes_a_student(cnn, data):
    from edgekit.compress.recipe import parse_recipe

    with pytest.raises(RecipeError, match="teacher: original names the model a recipe starts from"):
        distill(_student(), cnn, data, {"teacher": "original"})
    with pytest.raises(RecipeError, match="exclude each other"):
        parse_recipe([{"distill": {"student": "edgekit.examples.fashion_cnn:FashionCNN", "teacher": "original"}}])
