"""The plateau gate (sdbert.analysis.plateau) on curves whose answer is known."""

from __future__ import annotations

from sdbert.analysis.plateau import gate_epoch

# a BASE run of the main job's setting trained for 8 epochs (issue text's orientation run)
CE = dict(enumerate([1.10, 1.03, 0.80, 0.68, 0.57, 0.50, 0.46, 0.41], start=1))
VAL = dict(enumerate([46.3, 58.4, 59.6, 66.6, 67.1, 67.3, 68.3, 68.3], start=1))


def test_not_plateaued_while_validation_still_moves_and_ce_is_high():
    gate = gate_epoch(CE, VAL)
    assert gate.epoch is None and "neither criterion met in 8 epochs" in gate.reason


def test_flat_validation_gates_at_the_third_flat_epoch():
    val = {**VAL, 9: 68.6, 10: 68.4}  # epochs 7-9: 68.3, 68.3, 68.6 (range 0.3; epochs 6-8 range 1.0)
    ce = {**CE, 9: 0.38, 10: 0.36}
    gate = gate_epoch(ce, val)
    assert gate.epoch == 9 and "within 0.30 points over epochs 7-9" in gate.reason
    assert gate_epoch(ce, val, tolerance=0.2).epoch is None  # 0.3 points is not within 0.2


def test_low_training_ce_gates_first_when_it_comes_first():
    ce = {**CE, 9: 0.29}
    val = {**VAL, 9: 70.0}
    gate = gate_epoch(ce, val)
    assert gate.epoch == 9 and gate.reason.startswith("training CE 0.290")
    assert gate_epoch(CE, VAL, ce_max=0.5).epoch == 6  # 0.50 <= 0.5 at epoch 6


def test_a_missing_validation_epoch_does_not_count_as_flat():
    val = {1: 50.0, 3: 50.0, 4: 50.1}
    assert gate_epoch({}, val).epoch is None
    assert gate_epoch({}, {**val, 2: 50.2}).epoch == 3
