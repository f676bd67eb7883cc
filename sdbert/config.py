"""Config helpers: OmegaConf resolvers used by conf/ (registered on import) and a clean instantiate."""

from __future__ import annotations

import functools
import secrets
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf


def _paper_teacher_size(dataset: str, strategy_target: str) -> int | str:
    """``${paper_k:<dataset>,<strategy _target_>}``: Table 2's best K for this dataset and strategy."""
    from hydra.utils import get_class

    from sdbert.paper import default_teacher_size

    name = getattr(get_class(strategy_target), "name", "base")
    return default_teacher_size(dataset, name)


@functools.cache
def process_id() -> str:
    """``${process_id:}``: six hex digits fixed for this process, so every read of ``hydra.run.dir`` gives
    the same folder while two processes started in the same second get two."""
    return secrets.token_hex(3)


def strategy_tag(strategy: Any) -> str:
    """``sda-K2``: the strategy's ``describe()`` name and K (where it has one) of a ``strategy`` config node.

    A node that does not build (a bad K: the run refuses it in one line later) is named by its class.
    """
    from hydra.utils import get_class, instantiate

    node: Any = OmegaConf.to_container(strategy, resolve=True) if OmegaConf.is_config(strategy) else strategy
    try:
        description = instantiate(node).describe()
        name, k = str(description.name), description.teacher_size
    except Exception:
        try:
            name = str(getattr(get_class(str(node["_target_"])), "name", "strategy"))
        except Exception:
            name = "strategy"
        k = None
    return name if k is None else f"{name}-K{k}"


def run_tag(strategy: Any, dataset: Any, seed: Any) -> str:
    """``${run_tag:${strategy},<dataset>,<seed>}``: a run directory's readable, unique tail,
    e.g. ``sda-K2_snli_seed42_3fa9c1`` (:func:`strategy_tag`; no ``-K`` for strategies without one)."""
    return f"{strategy_tag(strategy)}_{dataset}_seed{seed}_{process_id()}"


def resume_requested(resume: Any) -> bool:
    """Whether the ``resume`` key asks to continue a run (``auto`` or a run directory)."""
    return resume not in (None, "", "null")


def _run_dir(resume: Any, default: str) -> str:
    """``${sdbert_run_dir:${resume},<default>}``: Hydra's run directory; ``resume=RUN_DIR`` continues in RUN_DIR."""
    return default if not resume_requested(resume) or str(resume) == "auto" else str(resume)


def _config_subdir(resume: Any, output_dir: str) -> str:
    """``${sdbert_config_subdir:${resume},<output dir>}``: where Hydra writes the job's config. A resumed
    run whose directory already holds its ``.hydra/config.yaml`` keeps it (sdbert.resume reads it) and
    Hydra's view of the resuming command goes to ``.hydra/resumed``."""
    from pathlib import Path

    if resume_requested(resume) and (Path(output_dir) / ".hydra" / "config.yaml").is_file():
        return ".hydra/resumed"
    return ".hydra"


def _output_dir() -> str:
    """``${sdbert_output_dir:}``: the job's folder, Hydra's ``hydra.runtime.output_dir`` in a run. Printing the
    config (``--cfg job --resolve``) runs no job, so there it is the folder a run would get, ``hydra.run.dir``
    made absolute as Hydra makes it."""
    import os

    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()  # a DictConfig at run time (typed as its structured schema)
    output_dir = OmegaConf.select(cast(DictConfig, hydra), "runtime.output_dir")  # None while unset ("???")
    return str(output_dir or os.path.abspath(hydra.run.dir))


def register_resolvers() -> None:
    """Idempotent: safe to call from tests, train.py and the package import alike."""
    if not OmegaConf.has_resolver("paper_k"):
        OmegaConf.register_new_resolver("paper_k", _paper_teacher_size)
    if not OmegaConf.has_resolver("run_tag"):
        OmegaConf.register_new_resolver("run_tag", run_tag)
    if not OmegaConf.has_resolver("process_id"):
        OmegaConf.register_new_resolver("process_id", process_id)
    if not OmegaConf.has_resolver("sdbert_run_dir"):
        OmegaConf.register_new_resolver("sdbert_run_dir", _run_dir)
    if not OmegaConf.has_resolver("sdbert_config_subdir"):
        OmegaConf.register_new_resolver("sdbert_config_subdir", _config_subdir)
    if not OmegaConf.has_resolver("sdbert_output_dir"):
        OmegaConf.register_new_resolver("sdbert_output_dir", _output_dir)


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


def _quoted(value: str) -> str:
    """``[négatif,positif]`` → ``["négatif","positif"]``: each element of a value (list or sweep) in quotes."""
    def quote(item: str) -> str:
        item = item.strip()
        return item if item[:1] in ("'", '"') else f'"{item}"'

    if value.startswith("[") and value.endswith("]"):
        return "[" + ",".join(quote(i) for i in value[1:-1].split(",")) + "]"
    return ",".join(quote(i) for i in value.split(","))


def non_ascii_hint(args: list[str]) -> str | None:
    """A hint for the first command-line override Hydra cannot parse because it has letters beyond ASCII
    outside quotes (``dataset.label_names=[négatif,positif]``): quote them. None when there is none."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg or arg.isascii():
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            key, _, value = arg.partition("=")
            return (f"{arg}: Hydra reads letters beyond ASCII only inside quotes; quote them (and the whole "
                    f"override, for the shell): '{key}={_quoted(value)}'")
    return None
