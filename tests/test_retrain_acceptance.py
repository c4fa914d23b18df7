"""Retrain acceptance that cannot be fooled: no score is never a zero to beat, and a candidate that
knows fewer emotions or scores a lower UAR is only adopted when someone confirms it."""

from __future__ import annotations

import math

import pytest

from finetune.retrain import decide


@pytest.mark.parametrize("missing", [float("nan"), math.inf, "0.0", True])
def test_a_serving_score_that_is_not_a_number_is_an_error(missing) -> None:
    with pytest.raises(ValueError, match="not a number"):
        decide(0.5, missing)
    with pytest.raises(ValueError, match="not a number"):
        decide(0.5, missing, force=True)  # not even forced: there is nothing to compare with


def test_a_new_score_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="new model's UAR"):
        decide(float("nan"), 0.7)


def test_fewer_emotions_need_confirmation_even_with_a_higher_uar() -> None:
    decision = decide(0.9, 0.5, new_classes=5, serving_classes=7)
    assert not decision.accepted and "knows 5 emotions, fewer than the serving model's 7" in decision.reason
    assert decide(0.9, 0.5, new_classes=5, serving_classes=7, force=True).accepted
    assert decide(0.9, 0.5, new_classes=7, serving_classes=7).accepted
    assert decide(0.9, 0.5, new_classes=8, serving_classes=7).accepted


def test_a_lower_uar_and_fewer_classes_are_both_reported() -> None:
    decision = decide(0.5, 0.7, new_classes=5, serving_classes=7)
    assert not decision.accepted and "fewer" in decision.reason and "0.5000 < serving model's 0.7000" in decision.reason


def test_no_serving_model_accepts() -> None:
    assert decide(0.3, None, new_classes=2, serving_classes=None).accepted
