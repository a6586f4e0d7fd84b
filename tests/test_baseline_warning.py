"""The "never mislead" line: a network that does worse than a baseline on validation is named."""

from __future__ import annotations

from dlrun.contract import Report
from dlrun.metrics import losing_to_baseline


def test_a_losing_network_is_named_with_both_numbers_and_the_suggestion():
    line = losing_to_baseline("accuracy", True, 0.595, {"tfidf_logreg": 0.865, "majority": 0.5}, "model=bow")
    assert line == ("the network loses to the tfidf_logreg baseline on the validation split: "
                    "accuracy 0.595 vs 0.865; try model=bow")


def test_direction_decides_and_a_tie_or_a_win_is_silent():
    assert losing_to_baseline("mae", False, 62.8, {"naive": 46.4, "seasonal_naive": 49.9}).startswith(
        "the network loses to the naive baseline")
    assert losing_to_baseline("mae", False, 33.5, {"naive": 46.4}) is None
    assert losing_to_baseline("accuracy", True, 0.9, {"linear": 0.9}) is None
    assert losing_to_baseline("accuracy", True, None, {"linear": 0.9}) is None
    assert losing_to_baseline("accuracy", True, 0.5, {"linear": float("nan")}) is None


def test_report_warnings_survive_prefix_and_merge():
    a = Report({"accuracy": 1.0}, warnings=["w1"]).prefixed("test")
    assert a.warnings == ["w1"] and "test/accuracy" in a.metrics
    a.merge(Report(warnings=["w1", "w2"]))
    assert a.warnings == ["w1", "w2"]
