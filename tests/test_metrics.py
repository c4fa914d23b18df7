"""The local evaluate modules agree with scikit-learn, load offline, and reports get written."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from ser.metrics import METRIC_MODULES, compute_metrics, write_report

REPO = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "happy", "sad", "angry", "fearful"]


@st.composite
def predictions(draw):
    n_classes = draw(st.integers(2, len(LABELS)))
    n = draw(st.integers(1, 40))
    y_true = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    return LABELS[:n_classes], y_true, y_pred


@settings(max_examples=40, deadline=None)
@given(case=predictions())
def test_metrics_match_scikit_learn(case):
    labels, y_true, y_pred = case
    got = compute_metrics(y_true, y_pred, labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent from y_true
        assert got["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    everyone = list(range(len(labels)))
    assert got["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=everyone).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=everyone, zero_division=0
    )
    for i, label in enumerate(labels):
        row = got["per_class"][label]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    assert got["labels"] == labels and got["n"] == len(y_true)


def test_uar_weighs_classes_equally():
    y_true = ["angry"] * 9 + ["sad"]
    y_pred = ["angry"] * 10
    metrics = compute_metrics(y_true, y_pred, ["sad", "angry"])
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["uar"] == pytest.approx(0.5)
    assert metrics["per_class"]["sad"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_names_and_indices_give_the_same_result():
    by_name = compute_metrics(["sad", "happy", "sad"], ["sad", "sad", "sad"], LABELS)
    by_index = compute_metrics([2, 1, 2], np.array([2, 2, 2]), LABELS)
    assert by_name == by_index
    json.dumps(by_name)  # plain JSON-able values


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not one of the labels"):
        compute_metrics(["sad"], ["sleepy"], LABELS)
    with pytest.raises(ValueError, match="outside"):
        compute_metrics([0], [9], LABELS)
    with pytest.raises(ValueError, match="items"):
        compute_metrics([0, 1], [0], LABELS)
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics([], [], LABELS)


def test_report_files(tmp_path):
    metrics = compute_metrics([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], ["neutral", "happy", "sad"])
    paths = write_report(metrics, tmp_path / "out", title="EmoDB LOSO")
    assert set(paths) == {"report", "confusion_matrix", "per_class"}
    for kind in ("confusion_matrix", "per_class"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["report"].read_text()
    assert text.startswith("# EmoDB LOSO")
    assert "| UAR (unweighted average recall) | 0.8333 |" in text
    assert "| happy | 1.0000 | 0.5000 | 0.6667 | 2 |" in text
    assert "| sad | 0 | 0 | 2 |" in text


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_local_modules_load_offline_without_network(no_network):
    """Each module loads from its folder with the hub disabled and sockets refused."""
    import evaluate

    out = {}
    for name in METRIC_MODULES:
        module = evaluate.load(str(REPO / "ser" / "metrics" / name), keep_in_memory=True)
        extra = {"num_classes": 2} if name in ("per_class", "confusion_matrix") else {}
        out[name] = module.compute(predictions=[0, 1, 1], references=[0, 1, 0], **extra)
    assert out["accuracy"] == {"accuracy": pytest.approx(2 / 3)}
    assert out["uar"] == {"uar": pytest.approx(0.75)}
    assert out["macro_f1"] == {"macro_f1": pytest.approx(2 / 3)}
    assert out["per_class"]["recall"] == [0.5, 1.0]
    assert out["confusion_matrix"] == {"confusion_matrix": [[1, 1], [0, 1]]}
