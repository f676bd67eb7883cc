"""RunSpec (sdbert.spec): built once from the config; what metrics.json, the resume check and W&B read."""

from __future__ import annotations

import json

import torch

from sdbert.config import instantiate
from sdbert.spec import RunSpec


def test_spec_from_config_and_what_it_gives(make_cfg):
    cfg = make_cfg("strategy=sda", "teacher_size=3", "distill_weight=0.5", "seed=7", "data_seed=9")
    spec = RunSpec.from_config(cfg, instantiate(cfg.strategy).describe())
    assert (spec.dataset, spec.seed, spec.data_seed, spec.model_short) == ("bbc_news", 7, 9, "all-minilm-l6-v2-random")
    assert spec.labels == tuple(cfg.dataset.label_names) and spec.model.endswith("(random init)")
    identity = spec.checkpoint_identity()
    assert identity["strategy"] == "sda" and identity["strategy.teacher_size"] == 3
    assert identity["strategy.distill_weight"] == 0.5 and identity["labels"] == list(spec.labels)
    other = RunSpec.from_config(make_cfg("strategy=sda", "teacher_size=2"),
                                instantiate(make_cfg("strategy=sda", "teacher_size=2").strategy).describe())
    assert other.checkpoint_identity() != identity  # another K is another run


def test_metrics_json_says_which_run_it_was_from_the_spec(tiny_run):
    run = tiny_run("strategy=sda")
    summary = json.loads((run / "metrics.json").read_text())
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    spec = RunSpec.from_config(cfg, instantiate(cfg.strategy).describe())
    assert {k: summary[k] for k in spec.summary_fields()} == json.loads(json.dumps(spec.summary_fields()))
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["sdbert_run"] == spec.checkpoint_identity()
