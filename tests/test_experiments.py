"""The paper-experiment configs compose, and their sweeper params expand to the paper's grids.

Hydra composes slowly (~0.3 s), so each experiment is composed once with its hydra node, its jobs are
expanded exactly as the basic sweeper does, every job's cell is derived from its overrides, and one
job is composed for real to check that derivation.
"""

from __future__ import annotations

import itertools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import OmegaConf

from sdbert.analysis.sweeps import expand_sweep
from sdbert.config import instantiate
from sdbert.errors import ConfigError
from sdbert.paper import default_teacher_size
from tests.conftest import CONF, compose_train

SEVEN = ["imdb", "ag_news", "dbpedia", "yelp_polarity", "yelp_full", "snli", "mnli"]
LAMBDAS = [0.0, 0.5, 1.0, 1.5, 2.0]
BASE_SDA_SDV_SNLI = [("base", None, None), ("sda", 2, 1.0), ("sdv", 1, 1.0)]

#: experiment -> the set of (dataset, strategy, K, λ, seed, data_seed) its sweep must run
GRIDS = {
    "table2_sdv": {(d, "sdv", k, 1.0, 42, 42) for d in ["imdb", "ag_news", "snli"] for k in [1, 2, 3, 4, 5]},
    "table2_sda": {(d, "sda", k, 1.0, 42, 42) for d in ["imdb", "ag_news", "snli"] for k in [2, 3, 4, 5, "all"]},
    "table2_sdv_cpu": {(d, "sdv", k, 1.0, 42, 42) for d in ["imdb", "snli"] for k in [1, 2, 3, 4, 5]},
    "table2_sda_cpu": {(d, "sda", k, 1.0, 42, 42) for d in ["imdb", "snli"] for k in [2, 3, 4, 5, "all"]},
    "figure3": {("imdb", s, 5, lam, 42, 42) for s in ["sda", "sdv"] for lam in LAMBDAS},
    "figure3_cpu": {("imdb", s, 2, lam, 42, 42) for s in ["sda", "sdv"] for lam in LAMBDAS},
    "figure4": {("snli", s, k, lam, 42, ds) for s, k, lam in BASE_SDA_SDV_SNLI for ds in range(10)},
    "figure4_cpu": {("snli", s, k, lam, 42, ds) for s, k, lam in BASE_SDA_SDV_SNLI for ds in range(10)},
    "table3": {(d, s, default_teacher_size(d, s) if s in ("sda", "sdv") else None, 1.0 if s in ("sda", "sdv") else None,
                seed, 42) for d in SEVEN for s in ["base", "se", "sdv", "sda"] for seed in [1, 2, 3, 4]},
    "table4": {(d, "sda", k, 1.0, 42, 42) for d in ["imdb", "ag_news", "snli"] for k in [1, "all"]},
}
#: experiment -> (model, batch, accumulation, max_length, train_per_class, sweep folder, epoch test on)
SCALE = {
    "table2_sdv": ("google-bert/bert-base-uncased", 4, 4, 512, None, "table2", False),
    "table2_sda": ("google-bert/bert-base-uncased", 4, 4, 512, None, "table2", False),
    "figure3": ("google-bert/bert-base-uncased", 4, 4, 512, None, "figure3", True),
    "figure4": ("google-bert/bert-base-uncased", 4, 4, 512, 500, "figure4", False),
    "table3": ("google-bert/bert-base-uncased", 4, 4, 512, None, "table3", True),
    "table4": ("google-bert/bert-large-uncased", 1, 16, 512, None, "table4", False),
    "table2_sdv_cpu": ("embedded:all-minilm-l6-v2", 16, 1, 64, 32, "table2_cpu", False),
    "table2_sda_cpu": ("embedded:all-minilm-l6-v2", 16, 1, 64, 32, "table2_cpu", False),
    "figure3_cpu": ("embedded:all-minilm-l6-v2", 16, 1, 64, 32, "figure3_cpu", True),
    "figure4_cpu": ("embedded:all-minilm-l6-v2", 16, 1, 64, 16, "figure4_cpu", False),
}


def _hydra_cfg(experiment: str, extra: list[str] = ()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[f"experiment={experiment}", *extra], return_hydra_config=True)


def _jobs(cfg, experiment: str, extra: list[str] = ()) -> list[list[str]]:
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return expand_sweep(params, [f"experiment={experiment}", *extra])


def _derived_cell(cfg, job: list[str]) -> tuple:
    """The cell a job runs, from its overrides over the experiment's composed config."""
    o = dict(x.split("=", 1) for x in job)
    dataset = o.get("dataset", cfg.dataset.name)
    strategy = o.get("strategy") or get_class(cfg.strategy._target_).name
    if strategy in ("sda", "sdv"):
        default = (default_teacher_size(dataset, strategy) if OmegaConf.is_interpolation(cfg, "teacher_size")
                   else cfg.teacher_size)  # the experiment may fix K
        k = o.get("teacher_size", default)
        k = k if k == "all" else int(k)
        lam = float(o.get("distill_weight", cfg.distill_weight))
    else:
        k = lam = None
    return (dataset, strategy, k, lam, int(o.get("seed", cfg.seed)), int(o.get("data_seed", cfg.data_seed)))


def _composed_cell(tmp_path, job: list[str]) -> tuple:
    cfg = compose_train(tmp_path, job)
    s = instantiate(cfg.strategy).describe()
    return (cfg.dataset.name, s.name, s.teacher_size, s.keys.get("distill_weight"), cfg.seed, cfg.data_seed)


@pytest.mark.parametrize("experiment", sorted(GRIDS))
def test_experiment_grid_and_scale(tmp_path, experiment):
    """The jobs Hydra's basic sweeper makes of the config's sweeper params are exactly the paper's cells;
    paper scale (§4.2) for the paper experiments, embedded model and data, CPU and small for the _cpu ones."""
    cfg = _hydra_cfg(experiment)
    jobs = _jobs(cfg, experiment)
    cells = [_derived_cell(cfg, job) for job in jobs]
    assert len(cells) == len(set(cells)), "a cell would run twice"
    assert set(cells) == GRIDS[experiment]
    assert _composed_cell(tmp_path, jobs[-1]) == _derived_cell(cfg, jobs[-1])  # the derivation is Hydra's

    model, batch, accumulate, max_length, per_class, sweep_dir, epoch_test = SCALE[experiment]
    assert cfg.model.name_or_path == model
    assert (cfg.dataset.batch_size, cfg.trainer.accumulate_grad_batches) == (batch, accumulate)
    assert cfg.dataset.max_length == max_length and cfg.dataset.train_per_class == per_class
    if experiment.endswith("_cpu"):
        assert cfg.trainer.accelerator == "cpu" and cfg.dataset.eval_size <= 100
        assert cfg.dataset.source == "embedded"
    else:
        assert cfg.trainer.accelerator == "gpu" and cfg.dataset.eval_size is None
    assert ("epoch_test" in cfg.callbacks) == epoch_test
    # both halves of Table 2 land side by side, so one report command covers the whole table
    unresolved = OmegaConf.to_container(cfg.hydra.sweep)["dir"]
    assert unresolved.startswith(f"${{paths.log_dir}}/${{task_name}}/multiruns/{sweep_dir}/")


def test_documented_variants_of_table3_and_table4(tmp_path):
    """Command-line keys replace the same sweeper keys: the cheaper Table 3 and Table 4's BASE row."""
    cfg = _hydra_cfg("table3", ["strategy=base"])
    base = {_derived_cell(cfg, j) for j in _jobs(cfg, "table3", ["strategy=base"])}
    assert base == {c for c in GRIDS["table3"] if c[1] == "base"}
    extra = ["strategy=se,sdv,sda", "seed=1"]
    cfg = _hydra_cfg("table3", ["strategy=se", "seed=1"])
    single = [_derived_cell(cfg, j) for j in _jobs(cfg, "table3", extra)]
    assert len(single) == 7 * 3 and {c[1] for c in single} == {"se", "sdv", "sda"} and {c[4] for c in single} == {1}
    extra = ["strategy=base", "teacher_size=1"]
    cfg = _hydra_cfg("table4", extra)
    jobs = _jobs(cfg, "table4", extra)
    expected = {(d, "base", None, None, 42, 42) for d in ["imdb", "ag_news", "snli"]}
    assert {_derived_cell(cfg, j) for j in jobs} == expected
    assert _composed_cell(tmp_path, jobs[0])[:2] == ("imdb", "base")
    assert set(itertools.chain.from_iterable(jobs)) >= {"experiment=table4", "strategy=base"}


def test_sdv_refuses_k_all_so_table2_sdv_leaves_it_out(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=table2_sdv", "teacher_size=all"])
    with pytest.raises(ConfigError, match="strategy=sdv needs an integer teacher_size"):
        instantiate(cfg.strategy)


@pytest.mark.parametrize(
    "experiment,datasets,seeds,accelerator",
    [("evidence", ("imdb", "snli"), range(1, 4), "gpu"), ("evidence_cpu", ("snli",), range(1, 6), "cpu")],
)
def test_evidence_experiments_pair_every_strategy_by_seed(tmp_path, experiment, datasets, seeds, accelerator):
    """Issue 10: BASE, SE, SDA, SDV at Table 2's K and λ = 1 for every dataset and seed, data_seed = seed
    (runs pair by seed), seed-major job order (a sweep cut short keeps complete seeds), the stated scale."""
    cfg = _hydra_cfg(experiment)
    jobs = _jobs(cfg, experiment)
    cells = [_composed_cell(tmp_path / str(i), job) for i, job in enumerate(jobs)]
    expected = {
        (d, s, default_teacher_size(d, s) if s in ("sda", "sdv") else None, 1.0 if s in ("sda", "sdv") else None,
         seed, seed)
        for d in datasets for s in ("base", "se", "sda", "sdv") for seed in seeds
    }
    assert len(cells) == len(expected) and set(cells) == expected
    per_seed = len(cells) // len(seeds)
    assert [c[4] for c in cells] == [seed for seed in seeds for _ in range(per_seed)]  # seed-major
    composed = compose_train(tmp_path / "scale", [f"experiment={experiment}"])
    assert composed.trainer.accelerator == accelerator and composed.trainer.max_epochs == 3
    assert composed.strategy.get("teacher_dropout", True) is True  # the default teacher (item 4)
    if experiment == "evidence":  # the paper's setting: full data, head-512, 4 x 4, a test pass per epoch
        assert composed.dataset.train_per_class is None and composed.dataset.max_length == 512
        assert (composed.dataset.batch_size, composed.trainer.accumulate_grad_batches) == (4, 4)
        assert "epoch_test" in composed.callbacks
    else:  # the CPU regime: 150 pairs per class, one fixed 4,000-pair test subset, the last model tested
        assert composed.dataset.train_per_class == 150 and composed.dataset.eval_size == 4000
        assert composed.test_ckpt == "last" and composed.optim.encoder_lr == 1.0e-4
