"""OmegaConf resolvers used by conf/ (registered when sdbert is imported)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _paper_teacher_size(dataset: str, strategy_target: str) -> int | str:
    """``${paper_k:<dataset>,<strategy _target_>}``: Table 2's best K for this dataset and strategy."""
    from hydra.utils import get_class

    from sdbert.paper import default_teacher_size

    name = getattr(get_class(strategy_target), "name", "base")
    return default_teacher_size(dataset, name)


def register_resolvers() -> None:
    """Idempotent: safe to call from tests, train.py and the package import alike."""
    if not OmegaConf.has_resolver("paper_k"):
        OmegaConf.register_new_resolver("paper_k", _paper_teacher_size)
