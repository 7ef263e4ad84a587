"""Task metrics on hand-made outputs: the figures, the inference rules, the float model beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import DataError, UsageError
from edgekit.metrics import METRICS, Metric, MetricResult, evaluate, get_metric, infer_metric

# 4 samples × 6 classes; the labels rank 1st, 1st, 3rd and 6th
LOGITS = np.array([
    [9, 1, 0, 0, 0, 0],
    [0, 5, 1, 0, 0, 0],
    [3, 2, 1, 0, 0, 0],
    [5, 4, 3, 2, 1, 0],
], np.float32)
LABELS = np.array([0, 1, 2, 5])


def test_registry_by_name() -> None:
    assert set(METRICS) == {"classification", "agreement", "embedding", "regression"}
    assert all(isinstance(m, Metric) and get_metric(name) is m for name, m in METRICS.items())
    with pytest.raises(UsageError, match="unknown metric 'top1'") as info:
        get_metric("top1")
    assert "classification" in info.value.hint


# --- classification ----------------------------------------------------------------------------


def test_classification_top1_top5() -> None:
    result = get_metric("classification").compute(LOGITS, LABELS)
    assert result.values == {"top1": 0.5, "top5": 0.75}
    assert result.value == 0.5 and result.headline == "top1" and result.samples == 4
    assert result.text() == "top-1 50.00 % · top-5 75.00 % vs labels (4 samples)"


def test_classification_ties_break_like_argmax() -> None:
    tied = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # argmax picks class 0 on a tie: label 0 is right, label 1 is not
    assert get_metric("classification").compute(tied, np.array([0, 1])).values["top1"] == 0.5


def test_classification_five_classes_or_fewer_has_no_top5() -> None:
    result = get_metric("classification").compute(LOGITS[:, :5], np.array([0, 1, 2, 4]))
    assert set(result.values) == {"top1"}


def test_classification_accepts_pooled_heads_and_float_labels() -> None:
    result = get_metric("classification").compute(LOGITS[:, :, None, None], LABELS.astype(np.float32))
    assert result.values["top1"] == 0.5


@pytest.mark.parametrize(
    ("outputs", "labels", "error", "match"),
    [
        (LOGITS, None, UsageError, "needs labels"),
        (LOGITS, np.array([0, 1, 2, 6]), DataError, "label 6 is outside the model's 6 classes"),
        (LOGITS, np.array([0, -1, 2, 3]), DataError, "label -1 is outside"),
        (LOGITS, np.array([0, 1, 2]), DataError, "3 labels for 4 outputs"),
        (LOGITS, np.array([0.5, 1, 2, 3]), DataError, "one integer label per sample"),
        (LOGITS[:, :1], np.array([0, 0, 0, 0]), DataError, "needs class scores shaped"),
        (np.zeros((4, 3, 2)), np.array([0, 0, 0, 0]), DataError, "needs class scores shaped"),
        (np.array(["a", "b"]), np.array([0, 1]), DataError, "not numbers"),
    ],
)
def test_classification_errors(outputs: np.ndarray, labels: np.ndarray | None, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        get_metric("classification").compute(outputs, labels)


# --- agreement, embedding ----------------------------------------------------------------------


def test_agreement_with_the_float_model() -> None:
    artifact = LOGITS.copy()
    artifact[3] = [0, 0, 0, 0, 0, 9]  # one of four top-1s changes
    result = get_metric("agreement").compute(artifact, None, LOGITS)
    assert result.value == 0.75 and result.against == "float model"
    assert result.text() == "top-1 agreement 75.00 % vs float model (4 samples)"
    with pytest.raises(UsageError, match="needs the float model's outputs"):
        get_metric("agreement").compute(artifact)
    with pytest.raises(DataError, match="reference outputs are shaped"):
        get_metric("agreement").compute(artifact, None, LOGITS[:, :3])


def test_embedding_cosines() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    out = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    result = get_metric("embedding").compute(out, None, ref)
    # same direction 1, orthogonal 0, both zero 1, one zero 0
    assert result.values == {"mean_cosine": 0.5, "min_cosine": 0.0}
    opposite = get_metric("embedding").compute(-ref[:2], None, ref[:2])
    assert opposite.values["mean_cosine"] == pytest.approx(-1.0)
    # dense outputs are compared per sample, flattened
    maps = np.random.default_rng(0).standard_normal((3, 4, 5, 5))
    assert get_metric("embedding").compute(maps * 3, None, maps).value == pytest.approx(1.0)


# --- regression --------------------------------------------------------------------------------


def test_regression_against_the_float_model() -> None:
    ref = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = np.array([[3.0, 4.0], [0.0, 0.5]])
    result = get_metric("regression").compute(out, None, ref)
    assert result.values == pytest.approx({"mse": 0.0625, "max_abs": 0.5, "relative_error": 0.1})
    assert result.against == "float model" and not result.higher_is_better
    assert result.text() == "MSE 0.0625 · max|Δ| 0.5 · rel. error 10.00 % vs float model (2 samples)"


def test_regression_against_targets_of_the_outputs_shape() -> None:
    out = np.array([[1.0], [2.0], [4.0]])
    result = get_metric("regression").compute(out, np.array([1.0, 2.0, 3.0]), out + 100)
    assert result.against == "targets" and result.values["max_abs"] == 1.0


def test_regression_needs_something_to_compare_with() -> None:
    with pytest.raises(UsageError, match="needs targets shaped like the outputs"):
        get_metric("regression").compute(np.zeros((2, 3)))
    zero = get_metric("regression").compute(np.zeros((2, 3)), None, np.zeros((2, 3)))
    assert zero.values["relative_error"] == 0.0


# --- inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "shape", "metric"),
    [
        (np.array([1, 2]), (2, 10), "classification"),
        (np.array([1.0, 2.0]), (2, 10), "classification"),  # integral floats are class labels
        (np.array([1, 2]), (2, 1000, 1, 1), "classification"),
        (None, (2, 10), "agreement"),
        (None, (2, 1280, 1, 1), "embedding"),
        (None, (2, 1), "regression"),
        (None, (2,), "regression"),
        (None, (2, 21, 64, 64), "regression"),
        (None, (2, 16, 768), "regression"),
        (np.array([0.3, 1.5]), (2, 1), "regression"),
        (np.zeros((2, 4)), (2, 4), "regression"),  # per-sample targets
        (np.array([1, 0]), (2, 21, 64, 64), "regression"),
    ],
)
def test_infer_metric_rules(labels: np.ndarray | None, shape: tuple, metric: str) -> None:
    assert infer_metric(labels, shape) == metric


# --- evaluate: the float model beside the artifact ---------------------------------------------


def test_evaluate_puts_the_float_figure_beside_label_metrics() -> None:
    artifact = LOGITS.copy()
    artifact[2] = [0, 0, 9, 0, 0, 0]  # the artifact gets sample 2 right, the float model does not
    result = evaluate("classification", artifact, labels=LABELS, reference_outputs=LOGITS)
    assert result.values["top1"] == 0.75 and result.reference is not None
    assert result.reference.values == {"top1": 0.5, "top5": 0.75}
    assert result.text().endswith("; float model top-1 50.00 % · top-5 75.00 %")
    record = json.loads(json.dumps(result.to_dict()))
    assert record["value"] == 0.75 and record["float"] == {"top1": 0.5, "top5": 0.75}


def test_evaluate_reports_only_the_artifact_for_reference_metrics() -> None:
    for name in ("agreement", "embedding"):
        result = evaluate(name, LOGITS, labels=LABELS, reference_outputs=LOGITS)
        assert result.reference is None and "; float model" not in result.text()
    regression = evaluate("regression", LOGITS, reference_outputs=LOGITS * 2)
    assert regression.reference is None and regression.to_dict()["float"] is None


def test_evaluate_regression_targets_have_a_float_figure() -> None:
    targets = np.array([[1.0], [2.0]])
    result = evaluate(get_metric("regression"), targets + 1, labels=targets, reference_outputs=targets + 0.5)
    assert result.values["mse"] == 1.0 and result.reference.values["mse"] == 0.25


def test_result_without_labels_or_reference_keeps_its_own_figure() -> None:
    result = evaluate("classification", LOGITS, labels=LABELS)
    assert isinstance(result, MetricResult) and result.reference is None and result.value == 0.5
