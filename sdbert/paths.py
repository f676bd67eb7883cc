"""Where things live: the cache root (downloads, converted data, token caches) and the names inside a run directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The root of sdbert's caches: ``override``, else ``$SDBERT_CACHE``, else ``~/.cache/sdbert``."""
    root = override or os.environ.get("SDBERT_CACHE") or Path.home() / ".cache" / "sdbert"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- what a run directory holds (a Hydra output directory) ------------------------------------------
#: the run's outcome: ``status`` ok / failed, the test metrics, seeds, wall time
SUMMARY_FILE = "metrics.json"
#: the run's resolved config and the command-line overrides, as Hydra writes them
CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
#: ``<test name>.pt``: the reported model's test-set probabilities and labels
PREDICTIONS_DIR = "predictions"
CHECKPOINT_DIR = "checkpoints"
#: the Hugging Face folder of the tested model (``export=true``; ``python -m sdbert.export``)
EXPORT_DIR = "hf"
#: what every sdbert export writes beside the Hugging Face files (where it came from); its presence marks
#: a folder as an sdbert export (``sdbert-export --overwrite`` replaces only such a folder)
EXPORT_META = "sdbert.json"
#: a sweep directory's record of what it was to run
SWEEP_FILE = "multirun.yaml"
#: written by ``sdbert-ensemble`` into its output directory
ENSEMBLE_FILE = "ensemble.json"
