"""Every option of every config group composes, and the paper's keys read like the paper."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from sdbert.config import instantiate
from sdbert.errors import ConfigError
from tests.conftest import CONF, compose_train

GROUPS = ["model", "dataset", "strategy", "optim", "trainer", "callbacks", "logger", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes(tmp_path, group, option):
    cfg = compose_train(tmp_path, [f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["dataset"]["name"] and resolved["model"]["name_or_path"]


def test_used_by_command_parses(tmp_path):
    cfg = compose_train(tmp_path, ["strategy=sdv", "teacher_size=5", "dataset=imdb"])
    strategy = instantiate(cfg.strategy)
    assert (strategy.name, strategy.teacher_size, strategy.distill_weight) == ("sdv", 5, 1.0)
    assert cfg.dataset.name == "imdb"


@pytest.mark.parametrize(
    "dataset,strategy,expected",
    [("imdb", "sdv", 5), ("imdb", "sda", 5), ("ag_news", "sdv", 1), ("ag_news", "sda", None),
     ("snli", "sdv", 1), ("snli", "sda", 2), ("mnli", "sda", 2)],
)
def test_default_teacher_size_follows_table2(tmp_path, dataset, strategy, expected):
    cfg = compose_train(tmp_path, [f"dataset={dataset}", f"strategy={strategy}"])
    assert instantiate(cfg.strategy).teacher_size == expected


def test_main_job_is_the_stability_setting(tmp_path):
    cfg = compose_train(tmp_path)
    assert cfg.model.name_or_path == "embedded:all-minilm-l6-v2"
    assert (cfg.dataset.name, cfg.dataset.train_per_class, cfg.dataset.source) == ("snli", 500, "embedded")
    assert cfg.dataset.eval_size is None  # the full official test set
    strategy = instantiate(cfg.strategy)
    assert (strategy.name, strategy.teacher_size, strategy.distill_weight) == ("sda", 2, 1.0)


def test_paper_recipe_defaults(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=paper"])
    assert cfg.optim.encoder_lr == 2e-5 and cfg.optim.head_lr == 1e-3
    assert cfg.optim.warmup_proportion == 0.1 and cfg.optim.weight_decay == 0.01
    assert cfg.model.dropout == 0.1 and cfg.dataset.max_length == 512
    assert cfg.dataset.batch_size == 4 and cfg.trainer.accumulate_grad_batches == 4


@pytest.mark.parametrize("group", ["dataset", "model", "strategy"])
def test_unknown_option_lists_the_choices(tmp_path, group):
    with pytest.raises(MissingConfigException) as info:
        compose_train(tmp_path, [f"{group}=nonexistent"])
    message = str(info.value)
    assert "nonexistent" in message and "Available options" in message
    assert all(opt in message for opt in _options(group))


@pytest.mark.parametrize("value,match", [("0", ">= 1"), ("-2", ">= 1"), ("abc", "integer >= 1 or 'all'")])
def test_bad_teacher_size_is_one_line(tmp_path, value, match):
    cfg = compose_train(tmp_path, ["strategy=sda", f"teacher_size={value}"])
    with pytest.raises(ConfigError, match=match) as info:
        instantiate(cfg.strategy)
    assert "\n" not in str(info.value)


def test_negative_lambda_is_one_line(tmp_path):
    cfg = compose_train(tmp_path, ["strategy=sdv", "distill_weight=-0.5"])
    with pytest.raises(ConfigError, match="distill_weight"):
        instantiate(cfg.strategy)
