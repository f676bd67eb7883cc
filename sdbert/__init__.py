"""sdbert: BERT fine-tuning with self-ensemble and self-distillation (Xu et al.)."""

__version__ = "0.1.0"

from sdbert.config import register_resolvers

register_resolvers()
