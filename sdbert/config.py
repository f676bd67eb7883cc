"""Config helpers: OmegaConf resolvers used by conf/ (registered on import) and a clean instantiate."""

from __future__ import annotations

from typing import Any

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


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets sdbert's one-line errors through unwrapped.

    Hydra wraps constructor errors in a multi-line ``InstantiationException``; users should see only
    our message, which already names the key and the fix.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from sdbert.errors import SdbertError

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, SdbertError):
            cause = cause.__cause__
        if isinstance(cause, SdbertError):
            raise cause from None
        raise
