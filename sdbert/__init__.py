"""sdbert: BERT fine-tuning with self-ensemble and self-distillation (Xu et al.)."""

__version__ = "0.1.0"
