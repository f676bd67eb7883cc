"""Teacher strategies: BASE (none), SE (parameter average), SDA (averaged teacher), SDV (voted teacher),
EMA (moving-average teacher).

The interface and its contract are in :mod:`sdbert.strategies.interface`.
"""

from sdbert.strategies.description import Description
from sdbert.strategies.ema import ExponentialMovingAverage
from sdbert.strategies.interface import (
    REPORTED,
    TeacherStrategy,
    Vanilla,
    metric_key,
    parse_distill_weight,
    parse_teacher_size,
)
from sdbert.strategies.self_distillation import SelfDistillationAveraged, SelfDistillationVoted
from sdbert.strategies.self_ensemble import SelfEnsemble

#: The order of the paper's tables (Table 3: BASE, SE, SDV, SDA); strategies not listed come after.
TABLE_ORDER: tuple[str, ...] = (Vanilla.name, SelfEnsemble.name, SelfDistillationVoted.name,
                                SelfDistillationAveraged.name)

__all__ = [
    "REPORTED",
    "TABLE_ORDER",
    "Description",
    "ExponentialMovingAverage",
    "SelfDistillationAveraged",
    "SelfDistillationVoted",
    "SelfEnsemble",
    "TeacherStrategy",
    "Vanilla",
    "metric_key",
    "parse_distill_weight",
    "parse_teacher_size",
]
