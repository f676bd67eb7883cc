"""The report: Avg. Δ as the paper computes it, tables in the paper's layout, figures, and plain words
about runs that failed, never started or were superseded."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from sdbert import paper
from sdbert.analysis.report import main, paper_errors, relative_error_change, write_report
from sdbert.analysis.rundirs import RunDirError, load_run
from sdbert.analysis.sweeps import expand_sweep
from sdbert.callbacks import EpochTestEvaluation
from sdbert.config import instantiate
from sdbert.module import SelfDistillationModule
from sdbert.paper import default_teacher_size
from sdbert.strategies import SelfDistillationAveraged
from tests.conftest import CONF, compose_train
from tests.helpers import loader, tiny_bert_classifier

PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ Avg. Δ
@pytest.mark.parametrize(
    "method,classification,nli",
    [("sda", 6.26, 4.65), ("sdv", 5.65, 5.30), ("vote", 5.44, 5.50), ("avg", 4.07, 3.24), ("se", 2.50, -0.51)],
)
def test_avg_delta_reproduces_the_papers_table3(method, classification, nli):
    """Table 3's Avg. Δ column, recomputed from Table 3's own numbers (NLI on error = 100 − accuracy)."""
    ours, base = paper_errors(method), paper_errors("base")
    cls = {k: ours[k] for k in paper.CLASSIFICATION_SETS}
    assert round(relative_error_change(cls, base), 2) == classification
    nli_ours = {k: ours[k] for k in paper.NLI_SETS}
    assert round(relative_error_change(nli_ours, base), 2) == nli
    assert relative_error_change({}, base) is None


# ------------------------------------------------------------------------------------------ tables
def _fake_run(root: Path, template, dataset: str, strategy: str, seed: int, accs: dict[str, float],
              lam: float = 1.0, k=None) -> Path:
    """A run directory as train.py leaves it (config + metrics.json), with given test accuracies."""
    cfg = template.copy()
    cfg.dataset = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml")
    cfg.strategy = OmegaConf.load(CONF / "strategy" / f"{strategy}.yaml")
    cfg.seed, cfg.distill_weight = seed, lam
    k = default_teacher_size(dataset, strategy) if k is None else k
    cfg.teacher_size = k
    path = root / f"{dataset}-{strategy}-k{k}-l{lam}-s{seed}"
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, path / ".hydra" / "config.yaml")
    described = instantiate(OmegaConf.to_container(cfg.strategy, resolve=True)).describe()
    metrics = {"status": "ok", "dataset": dataset, "model": cfg.model.name_or_path, "strategy": described.to_dict(),
               "seed": seed, "test": {f"{t}/acc": a for t, a in accs.items()}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def _paper_accs(method: str, dataset: str, table=paper.TABLE3) -> dict[str, float]:
    """Test accuracies that reproduce the paper's numbers for ``dataset`` (error % or accuracy %)."""
    if dataset == "mnli":
        return {"test_matched": table[method]["mnli_matched"], "test_mismatched": table[method]["mnli_mismatched"]}
    value = table[method][dataset]
    return {"test": value if dataset in paper.NLI_SETS else 100.0 - value}


@pytest.fixture(scope="module")
def table3_runs(tmp_path_factory) -> Path:
    """Fake runs of all seven datasets whose results are the paper's Table 3 (BASE with two seeds at ±0.1),
    ensemble.json files with Table 3's VOTE/AVG, and an IMDb λ and K sweep."""
    root = tmp_path_factory.mktemp("table3")
    template = compose_train(root / "x", ["model=tiny"])
    datasets = ["imdb", "ag_news", "dbpedia", "yelp_polarity", "yelp_full", "snli", "mnli"]
    for dataset in datasets:
        accs = _paper_accs("base", dataset)
        for seed, shift in ((1, -0.1), (2, 0.1)):
            path = _fake_run(root, template, dataset, "base", seed, {t: a + shift for t, a in accs.items()})
        ens = {"status": "ok", "k": 4, "group": load_run(path).group_key,
               "test": {t: {"vote/acc": _paper_accs("vote", dataset)[t], "avg/acc": _paper_accs("avg", dataset)[t]}
                        for t in accs}}
        (root / f"ensemble-{dataset}").mkdir()
        (root / f"ensemble-{dataset}" / "ensemble.json").write_text(json.dumps(ens))
        for strategy in ("se", "sdv", "sda"):
            _fake_run(root, template, dataset, strategy, 1, _paper_accs(strategy, dataset))
    for lam, err in ((0.5, 5.6), (2.0, 5.5)):  # Figure 3's λ on IMDb
        _fake_run(root, template, "imdb", "sda", 1, {"test": 100.0 - err}, lam=lam)
    for k in (1, 2):  # Table 2's K on IMDb
        _fake_run(root, template, "imdb", "sdv", 1, {"test": 100.0 - paper.TABLE2["sdv"]["imdb"][k]}, k=k)
    return root


def _table(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading, 1)[1].split("\n\n", 2)[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("|")]


def test_results_table_has_the_papers_layout(table3_runs, tmp_path):
    path, results = write_report([table3_runs], tmp_path / "out")
    md = path.read_text()
    rows = _table(md, "### tiny (random init)")
    header, body = rows[0], {r[0]: r for r in rows[2:]}
    assert header == ["Model", "IMDb", "AG's News", "DBPedia", "Yelp P.", "Yelp F.", "Avg. Δ",
                      "SNLI", "MNLI-m", "MNLI-mm", "Avg. Δ (NLI)"]
    # SDA/SDV at each dataset's Table 2 K form one row, as in Table 3; other K and λ get their own rows
    assert list(body) == ["BASE", "VOTE (K=4)", "AVG (K=4)", "SE", "SDV", "SDV (K=1)", "SDV (K=2)",
                          "SDA", "SDA (λ=0.5)", "SDA (λ=2)"]
    col = {name: i for i, name in enumerate(header)}
    # mean ± sample std over the two BASE seeds, the paper's number beside ours
    assert body["BASE"][col["IMDb"]] == "5.80 ± 0.14 (5.80) [n=2]"  # most cells have one seed here
    assert body["BASE"][col["SNLI"]] == "90.70 ± 0.14 (90.7) [n=2]"
    assert body["BASE"][col["MNLI-mm"]] == "83.30 ± 0.14 (83.3) [n=2]"
    assert "Seeds per cell: 1, unless marked [n=…]." in md
    assert body["BASE"][col["Avg. Δ"]] == "-"
    assert body["SDA"][col["AG's News"]] == "5.29 (5.29)" and body["SDA"][col["SNLI"]] == "91.20 (91.2)"
    # Avg. Δ from the runs equals the paper's own (in brackets), Table 3's column
    expected = {"SDA": ("6.26%", "4.65%"), "SDV": ("5.65%", "5.30%"), "VOTE (K=4)": ("5.44%", "5.50%"),
                "AVG (K=4)": ("4.07%", "3.24%"), "SE": ("2.50%", "-0.51%")}
    for name, (cls, nli) in expected.items():
        assert body[name][col["Avg. Δ"]] == f"{cls} ({cls})"
        assert body[name][col["Avg. Δ (NLI)"]] == f"{nli} ({nli})"
    assert body["SDA (λ=0.5)"][col["IMDb"]] == "5.60" and body["SDA (λ=0.5)"][col["SNLI"]] == ""  # no paper λ
    assert body["SDV (K=2)"][col["IMDb"]] == "5.44 (5.44)"  # Table 2's number for K=2
    t2 = _table(md, "#### Teacher size K (Table 2 layout)")
    assert t2[0] == ["Model", "K", "IMDb (err %)"]
    assert [r[:3] for r in t2[2:]] == [["SDV", "1", "5.39 (5.39)"], ["SDV", "2", "5.44 (5.44)"],
                                       ["SDV", "5", "5.35 (5.35)"]]
    assert "Every run of every sweep finished." in md
    assert (tmp_path / "out" / "figure3_lambda_imdb.png").read_bytes().startswith(PNG)
    assert (tmp_path / "out" / "figure4_stability_snli.png").read_bytes().startswith(PNG)
    assert "Not drawn: no run logged epoch_test/err" in md
    assert len((tmp_path / "out" / "runs.csv").read_text().splitlines()) == 1 + len(results.runs)


# ------------------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def damaged_sweep(tiny_sweep, tmp_path_factory) -> Path:
    """A copy of the real tiny multirun with one failed run added, two jobs added to multirun.yaml that
    never ran, and an older, failed duplicate of a finished run."""
    copy = tmp_path_factory.mktemp("damaged") / "sweep"
    shutil.copytree(tiny_sweep, copy, ignore=shutil.ignore_patterns("checkpoints", "ensemble"))
    failed = copy / "9"
    shutil.copytree(copy / "2", failed)
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(failed / ".hydra/config.yaml"), {"seed": 7}),
                   failed / ".hydra/config.yaml")
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "training diverged at step 3"}))
    older = copy / "old"
    shutil.copytree(copy / "0", older)
    (older / "metrics.json").write_text(json.dumps({"status": "failed", "error": "killed"}))
    os.utime(older / "metrics.json", (1, 1))
    multirun = OmegaConf.load(copy / "multirun.yaml")
    multirun.hydra.overrides.task = [("seed=1,2,3" if t == "seed=1,2" else t) for t in multirun.hydra.overrides.task]
    OmegaConf.save(multirun, copy / "multirun.yaml")
    return copy


def test_report_on_real_runs_names_what_is_missing(damaged_sweep, tmp_path):
    out = tmp_path / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([str(damaged_sweep), "--out", str(out)]) == 0
    printed = stdout.getvalue()
    md = (out / "report.md").read_text()
    for text in (printed, md):
        assert f"FAILED  {damaged_sweep / '9'}: training diverged at step 3" in text
        assert "job #2 (strategy=base seed=3): no run directory" in text
        assert "job #5 (strategy=sda seed=3): no run directory" in text
        assert f"SUPERSEDED  {damaged_sweep / 'old'} (failed) by the newer run {damaged_sweep / '0'}" in text
    assert ("6 run directories: 4 finished, 1 failed, 0 unfinished, 1 superseded by a newer run of the same "
            "setup and seeds; 2 sweep jobs never started.") in md
    rows = _table(md, "### tiny (random init)")
    assert rows[0] == ["Model", "bbc_news", "Avg. Δ"]
    body = {r[0]: r for r in rows[2:]}
    assert list(body) == ["BASE", "VOTE (K=2)", "AVG", "SDA"]  # bbc_news borrows its K (all) from AG's News
    runs = load_run(damaged_sweep / "0"), load_run(damaged_sweep / "1")
    errs = [100.0 - r.metrics["test"]["test/acc"] for r in runs]
    assert body["BASE"][1] == f"{sum(errs) / 2:.2f} ± {torch.tensor(errs).std().item():.2f}"
    assert body["AVG"][1].startswith("n/c")  # no ensemble.json in this copy: AVG not computed
    assert body["SDA"][1].endswith("[1 failed]")  # seed 7 failed beside the two finished seeds
    for name in ("figure4_stability_bbc_news", "figure5_epoch_error_bbc_news", "figure6_losses_bbc_news"):
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
        assert f"![{name}]({name}.png)" in md
    assert "Not drawn: no SDA/SDV runs that differ only in λ" in md


def test_report_reads_ensemble_json(tiny_sweep, tmp_path):
    from sdbert.analysis.ensemble import main as ensemble_main

    sweep = tiny_sweep
    with contextlib.redirect_stdout(io.StringIO()):
        assert ensemble_main([str(sweep), "--no-avg", "--out", str(tmp_path / "ens")]) == 0
    md = write_report([sweep, tmp_path / "ens"], tmp_path / "out")[0].read_text()
    saved = json.loads((tmp_path / "ens" / "ensemble.json").read_text())["test"]["test"]["vote/acc"]
    body = {r[0]: r for r in _table(md, "### tiny (random init)")[2:]}
    assert body["VOTE (K=2)"][1] == f"{100 - saved:.2f}"


def test_sweep_jobs_are_expanded_as_hydras_basic_sweeper_does():
    """The product of each key's values, keys in first-seen order, the last varying fastest; a key given again
    (the command line over the config's sweeper params) replaces its values in place."""
    jobs = expand_sweep({"dataset": "imdb,snli", "seed": "1,2"}, ["seed=3", "strategy=base,sda", "+tag=x"])
    assert jobs == [[f"dataset={d}", "seed=3", f"strategy={s}", "+tag=x"] for d in ("imdb", "snli")
                    for s in ("base", "sda")]
    assert expand_sweep(None, ["seed=range(1,4)"]) == [["seed=1"], ["seed=2"], ["seed=3"]]
    with pytest.raises(RunDirError, match="interval sweep"):
        expand_sweep({}, ["distill_weight=interval(0,1)"])


def test_missing_paths_are_one_line_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no run directories" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ Fig. 5 input
class _Data(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.set_ups: list[str | None] = []

    def setup(self, stage=None):
        self.set_ups.append(stage)

    def train_dataloader(self):
        return loader(n=24, batch_size=6, seed=0)

    def val_dataloader(self):
        return loader(n=12, batch_size=12, seed=1)

    def test_dataloader(self):
        return [loader(n=24, batch_size=12, seed=2)]


def _fit(tmp_path: Path, callbacks) -> tuple[SelfDistillationModule, L.Trainer, _Data]:
    torch.manual_seed(0)
    module = SelfDistillationModule(
        tiny_bert_classifier(seed=0), SelfDistillationAveraged(teacher_size=2),
        {"encoder_lr": 1e-2, "head_lr": 5e-2, "weight_decay": 0.01, "warmup_proportion": 0.1},
        label_names=["a", "b", "c"], seed=0,
    )
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=callbacks, num_sanity_val_steps=0)
    data = _Data()
    trainer.fit(module, datamodule=data)
    return module, trainer, data


@pytest.fixture
def one_thread():
    """Tiny models on 2 shared cores: OpenMP's spinning second thread makes them 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_epoch_test_evaluation_logs_the_test_error_and_leaves_training_alone(tmp_path, one_thread):
    logged: list[dict[str, float]] = []

    class Keep(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("epoch_test")})

    module, trainer, _ = _fit(tmp_path / "a", [EpochTestEvaluation(extras=True), Keep()])
    assert len(logged) == 3 and set(logged[-1]) == {"epoch_test/acc", "epoch_test/err", "epoch_test/teacher/acc",
                                                    "epoch_test/teacher/err"}
    final = trainer.test(module, datamodule=_Data(), verbose=False)[0]  # Lightning's own test loop
    assert logged[-1]["epoch_test/err"] == pytest.approx(final["test/err"], abs=1e-4)
    teacher = module.evaluate(_Data().test_dataloader()[0], extras=True)["teacher"]
    assert logged[-1]["epoch_test/teacher/acc"] == pytest.approx(teacher, abs=1e-4)
    assert len({round(x["epoch_test/acc"], 3) for x in logged}) > 1  # the model learns: the curve moves
    plain, _, _ = _fit(tmp_path / "b", [])
    for a, b in zip(module.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the extra test passes change nothing in training


def test_epoch_test_evaluation_names_a_module_it_cannot_evaluate():
    from types import SimpleNamespace

    trainer = SimpleNamespace(current_epoch=0, max_epochs=1)  # the last epoch: it evaluates
    with pytest.raises(TypeError, match="EpochTestEvaluation evaluates a SelfDistillationModule, not LightningModule"):
        EpochTestEvaluation().on_train_epoch_end(trainer, L.LightningModule())
