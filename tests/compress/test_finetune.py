"""Fine-tuning: the user's loss, early stopping, progress output."""

from __future__ import annotations

import io

import torch
from torch import nn

from edgekit.compress import FinetuneConfig, finetune
from edgekit.compress.finetune import as_progress
from edgekit.report.progress import NULL_PROGRESS, LineProgress


def test_custom_loss_and_history(tiny, data):
    calls = []

    def loss(outputs, targets):
        calls.append(outputs.shape[0])
        return nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)

    model, report = finetune(tiny, data, FinetuneConfig(epochs=2, max_batches=3), loss_fn=loss)
    assert len(calls) == 6
    assert [r["epoch"] for r in report.details["history"] if "epoch" in r] == [1, 2]
    assert report.after.accuracy is not None


def test_loss_by_reference(tiny, data):
    _, report = finetune(tiny, data, {"epochs": 1, "max_batches": 2, "loss": "torch.nn.functional:cross_entropy"})
    assert report.details["history"][0]["train_loss"] > 0


def test_early_stopping_restores_the_best_epoch(cnn, data):
    # a learning rate this high only makes the trained model worse: stop after one bad epoch
    model, report = finetune(cnn, data, {"epochs": 5, "lr": 5.0, "optimizer": "sgd", "patience": 1, "max_batches": 2,
                                         "schedule": "constant"})
    history = report.details["history"]
    epochs = [r for r in history if "epoch" in r]
    assert len(epochs) < 5 and epochs[-1].get("early_stop")
    best = max(r["val_accuracy"] for r in epochs)
    assert report.after.accuracy == best


def test_progress_plain_lines_and_quiet(tiny, data):
    stream = io.StringIO()
    finetune(tiny, data, {"epochs": 1, "max_batches": 2}, progress=LineProgress(stream))
    text = stream.getvalue()
    assert "fine-tune 1/1" in text and "val" in text
    assert as_progress("quiet") is NULL_PROGRESS and as_progress(None) is NULL_PROGRESS
    said = []
    finetune(tiny, data, {"epochs": 1, "max_batches": 1}, progress=said.append)
    assert any("fine-tune 1/1" in s for s in said)


def test_zero_epochs_is_a_measurement(tiny, data):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    _, report = finetune(tiny, data, {"epochs": 0})
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    assert report.before.accuracy == report.after.accuracy
