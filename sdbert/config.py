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


def _run_tag(strategy: str, teacher_size: object, dataset: str, seed: object) -> str:
    """``${run_tag:<strategy>,<K or null>,<dataset>,<seed>}``: a run directory's readable, unique tail."""
    from sdbert.rundir import run_tag

    return run_tag(strategy, teacher_size, dataset, seed)


def _process_id() -> str:
    """``${process_id:}``: six hex digits fixed for this process (a sweep directory's unique tail)."""
    from sdbert.rundir import process_id

    return process_id()


def register_resolvers() -> None:
    """Idempotent: safe to call from tests, train.py and the package import alike."""
    if not OmegaConf.has_resolver("paper_k"):
        OmegaConf.register_new_resolver("paper_k", _paper_teacher_size)
    if not OmegaConf.has_resolver("run_tag"):
        OmegaConf.register_new_resolver("run_tag", _run_tag)
    if not OmegaConf.has_resolver("process_id"):
        OmegaConf.register_new_resolver("process_id", _process_id)


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
