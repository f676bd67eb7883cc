"""Teacher strategies: BASE (none), SE (parameter average), SDA (averaged teacher), SDV (voted teacher).

The interface and its contract are in :mod:`sdbert.strategies.interface`.
"""

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

__all__ = [
    "REPORTED",
    "SelfDistillationAveraged",
    "SelfDistillationVoted",
    "SelfEnsemble",
    "TeacherStrategy",
    "Vanilla",
    "metric_key",
    "parse_distill_weight",
    "parse_teacher_size",
]
