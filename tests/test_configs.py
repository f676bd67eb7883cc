"""Every option of every config group composes, and the paper's keys read like the paper."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from sdbert import paper
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


def _table2_best(strategy: str, dataset: str) -> int | str:
    """The best K of the paper's Table 2 (lowest error, highest NLI accuracy), ties to the smaller teacher."""
    scores = paper.TABLE2[strategy][paper.K_BORROWED_FROM.get(dataset, dataset)]
    sign = -1 if dataset in paper.NLI_SETS or dataset == "mnli" else 1
    cost = {k: (k if isinstance(k, int) else 10**6) for k in scores}
    return min(scores, key=lambda k: (sign * scores[k], cost[k]))


@pytest.mark.parametrize("dataset", ["imdb", "ag_news", "snli", "mnli", "dbpedia"])
@pytest.mark.parametrize("strategy", ["sda", "sdv"])
def test_default_teacher_size_is_table2s_best(tmp_path, dataset, strategy):
    cfg = compose_train(tmp_path, [f"dataset={dataset}", f"strategy={strategy}"])
    best = _table2_best(strategy, dataset)
    assert instantiate(cfg.strategy).teacher_size == (None if best == "all" else best)


def test_main_job_is_the_stability_setting(tmp_path):
    """The default run is the paper's §4.4 setting on the embedded model, tested on the whole test set."""
    cfg = compose_train(tmp_path)
    assert cfg.model.name_or_path.startswith("embedded:")
    setting = (cfg.dataset.name, cfg.dataset.train_per_class)
    assert setting == (paper.STABILITY["dataset"], paper.STABILITY["train_per_class"])
    assert cfg.dataset.source == "embedded" and cfg.dataset.eval_size is None
    strategy = instantiate(cfg.strategy)
    assert strategy.teacher_size == paper.default_teacher_size(cfg.dataset.name, strategy.name)


def test_paper_experiment_follows_the_recipe(tmp_path):
    """experiment=paper composes to §4.2's recipe (sdbert.paper.RECIPE), whatever the group files say."""
    cfg = compose_train(tmp_path, ["experiment=paper"])
    composed = {
        "encoder_lr": cfg.optim.encoder_lr, "head_lr": cfg.optim.head_lr,
        "warmup_proportion": cfg.optim.warmup_proportion, "weight_decay": cfg.optim.weight_decay,
        "dropout": cfg.model.dropout, "max_length": cfg.dataset.max_length, "batch_size": cfg.dataset.batch_size,
        "accumulate_grad_batches": cfg.trainer.accumulate_grad_batches,
    }
    assert composed == paper.RECIPE


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
