"""Paired significance (sdbert.analysis.significance) on predictions whose answer is known, and its table in
the report of a real tiny multirun."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sdbert.analysis.report import write_report
from sdbert.analysis.rundirs import Run, load_run
from sdbert.analysis.significance import (
    SignificanceError,
    compare_runs,
    mcnemar_p,
    pair_runs,
    paired_bootstrap,
    paired_test,
)
from sdbert.analysis.sweeps import find_runs
from sdbert.rundir import RunDir, RunSummary

N = 10_000


def _wrong(n_wrong: int, seed: int, n: int = N) -> np.ndarray:
    """A run that gets ``n_wrong`` random examples of ``n`` wrong."""
    wrong = np.zeros(n, bool)
    wrong[np.random.default_rng(seed).choice(n, n_wrong, replace=False)] = True
    return wrong


def test_identical_predictions_are_not_different():
    base = np.stack([_wrong(1000 + 50 * s, seed=s) for s in range(3)])
    result = paired_test(base.copy(), base)
    assert result.delta == 0.0 and result.errors == result.base_errors
    assert result.ci_low <= 0.0 <= result.ci_high
    assert result.p_value == pytest.approx(1.0)
    assert result.mcnemar == (1.0, 1.0, 1.0)
    assert not result.significant and result.n_pairs == 3 and result.n_examples == N


@pytest.mark.parametrize("fixed,broken", [(300, 0), (500, 200)])
def test_right_on_300_more_of_10000_is_significant(fixed, broken):
    """Each seed pair: the strategy fixes ``fixed`` of BASE's errors and breaks ``broken`` of its right answers,
    so it is right on 300 more examples of 10,000: Δ = −3.0 points."""
    wrong, base_wrong = [], []
    for s in range(3):
        base = _wrong(1000, seed=s)
        ours = base.copy()
        rng = np.random.default_rng(100 + s)
        ours[rng.choice(np.flatnonzero(base), fixed, replace=False)] = False
        ours[rng.choice(np.flatnonzero(~base), broken, replace=False)] = True
        wrong.append(ours)
        base_wrong.append(base)
    result = paired_test(np.stack(wrong), np.stack(base_wrong))
    assert result.delta == pytest.approx(-3.0)
    assert result.errors == pytest.approx((7.0, 7.0, 7.0)) and result.base_errors == pytest.approx((10.0,) * 3)
    assert result.ci_low < result.delta < result.ci_high < 0.0  # the interval excludes 0
    assert result.p_value < 0.001 and result.significant
    assert max(result.mcnemar) < 1e-10


def _shifted(base: np.ndarray, change: int, seed: int) -> np.ndarray:
    """``base`` with ``change`` more (positive) or fewer (negative) examples wrong."""
    ours = base.copy()
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(~base if change > 0 else base)
    ours[rng.choice(pool, abs(change), replace=False)] = change > 0
    return ours


def test_seed_level_test_is_a_paired_t_test_with_its_power():
    """Brute force: the t statistic from its formula, its p from the t distribution, and the detectable
    difference is the one the noncentral t gives 80 % power (scipy, not statsmodels)."""
    from scipy import stats

    from sdbert.analysis.significance import seed_test

    e = np.array([-0.9, 0.4, -0.6, -0.2, 0.1])
    s = seed_test(e)
    n, sd = e.size, e.std(ddof=1)
    t = e.mean() / (sd / np.sqrt(n))
    assert s is not None and s.n_pairs == 5 and s.delta == pytest.approx(e.mean())
    assert s.p_value == pytest.approx(2 * stats.t.sf(abs(t), n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert (s.ci_low, s.ci_high) == pytest.approx((e.mean() - half, e.mean() + half))
    crit = stats.t.ppf(0.975, n - 1)
    nc = s.detectable / sd * np.sqrt(n)
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=1e-4)
    assert seed_test([0.3]) is None


def test_a_gain_on_these_test_examples_need_not_hold_for_new_seeds():
    """Per seed the strategy gains 2 points or loses 1 (10,000 examples each): pooled over examples the
    mean gain of 0.8 points is far outside the bootstrap's noise, but over 5 seeds that swing, the seed-level
    t-test does not call it (and the verdict is the seed-level test's)."""
    changes = [-200, 100, -200, 100, -200]
    base = [_wrong(1500, seed=s) for s in range(5)]
    ours = [_shifted(b, c, seed=50 + s) for s, (b, c) in enumerate(zip(base, changes, strict=True))]
    result = paired_test(np.stack(ours), np.stack(base))
    assert result.delta == pytest.approx(-0.8) and result.p_value < 0.001  # the examples say: a difference
    assert result.seeds is not None and result.seeds.p_value > 0.1  # new seeds say: not established
    assert result.seeds.ci_low < 0.0 < result.seeds.ci_high and not result.significant
    assert result.seeds.detectable > 0.8  # 5 seeds with this swing cannot see a 0.8-point difference


def test_the_bootstrap_is_seeded_and_agrees_with_resampling_examples():
    """The multinomial shortcut gives scipy's percentile interval for resampling the examples themselves."""
    from scipy import stats

    rng = np.random.default_rng(0)
    diff = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=2000, p=[0.06, 0.04, 0.8, 0.04, 0.06])
    first = paired_bootstrap(diff, seed=3)
    assert paired_bootstrap(diff, seed=3) == first
    reference = stats.bootstrap((diff,), np.mean, n_resamples=5_000, method="percentile",
                                rng=np.random.default_rng(1)).confidence_interval
    assert first[0] == pytest.approx(reference.low, abs=1e-3)  # 0.1 point; the interval is ~1.4 points wide
    assert first[1] == pytest.approx(reference.high, abs=1e-3)


def test_mcnemar_is_exact_for_few_discordant_examples():
    base = np.zeros(100, bool)
    ours = base.copy()
    ours[:5] = True  # 5 discordant examples, all against the strategy: exact two-sided p = 2 · 0.5^5
    assert mcnemar_p(ours, base) == pytest.approx(2 * 0.5**5)
    assert mcnemar_p(base, base) == 1.0


def _run(seed: int, data_seed: int = 42) -> Run:
    config = OmegaConf.create({"seed": seed, "data_seed": data_seed})
    return Run(RunDir(f"/runs/{seed}-{data_seed}", config=config, summary=RunSummary("ok")))


def test_runs_are_paired_by_seed_else_by_sorted_order():
    pairs, how = pair_runs([_run(2), _run(1)], [_run(1), _run(2), _run(3)])
    assert [(a.seed, b.seed) for a, b in pairs] == [(1, 1), (2, 2)] and how == "by seed (unpaired seeds 3)"
    pairs, how = pair_runs([_run(5), _run(4)], [_run(1), _run(2)])
    assert [(a.seed, b.seed) for a, b in pairs] == [(4, 1), (5, 2)]
    assert how.startswith("by sorted order (seeds 4, 5 vs BASE 1, 2")


def test_runs_of_other_test_sets_are_refused(tiny_sweep, tmp_path):
    runs = {(r.strategy, r.seed): r for r in find_runs([tiny_sweep]).runs}
    other = tmp_path / "other"
    shutil.copytree(runs["base", 2].path, other, ignore=shutil.ignore_patterns("checkpoints"))
    pred = torch.load(other / "predictions" / "test.pt")
    pred["labels"] = pred["labels"].flip(0)  # another order of the examples
    torch.save(pred, other / "predictions" / "test.pt")
    with pytest.raises(SignificanceError, match="saved other 'test' labels") as info:
        compare_runs([runs["sda", 1], runs["sda", 2]], [runs["base", 1], load_run(other)], "test")
    assert "\n" not in str(info.value)


def test_report_shows_the_paired_comparison(tiny_sweep, tmp_path):
    md = write_report([tiny_sweep], tmp_path / "out")[0].read_text()
    section = md.split("## Paired comparison with BASE", 1)[1].split("## Figures", 1)[0]
    block = section.split("### bbc_news (test) · tiny (random init)", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    assert rows[0][:2] == ["Model", "seeds"] and rows[0][-1] == "significant at 5 %"
    assert [r[0] for r in rows[2:]] == ["SDA"]
    sda = dict(zip(rows[0], rows[2], strict=True))
    # brute force from the saved predictions: each seed's error, paired seed with seed
    runs = {(r.strategy, r.seed): r for r in find_runs([tiny_sweep]).runs}

    def err(run) -> float:
        pred = torch.load(run.path / "predictions" / "test.pt")
        return 100.0 * (pred["probs"].argmax(-1) != pred["labels"]).double().mean().item()

    ours, base = [err(runs["sda", s]) for s in (1, 2)], [err(runs["base", s]) for s in (1, 2)]
    assert sda["seeds"] == "2"
    assert sda["error % (mean ± std)"] == f"{np.mean(ours):.2f} ± {np.std(ours, ddof=1):.2f}"
    assert sda["BASE error %"] == f"{np.mean(base):.2f} ± {np.std(base, ddof=1):.2f}"
    delta, interval = sda["examples: Δ [95 % CI]"].split(" ", 1)
    assert float(delta) == pytest.approx(np.mean(ours) - np.mean(base), abs=0.006)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert low <= float(delta) <= high
    assert len(sda["McNemar p per seed"].split(", ")) == 2
    # the seed-level test, primary: a t-test of the two per-seed differences
    from scipy import stats

    diffs = np.subtract(ours, base)
    seed_delta = sda["Δ error, pp [95 % CI over seeds]"].split(" ", 1)[0]
    assert float(seed_delta) == pytest.approx(diffs.mean(), abs=0.006)
    if np.std(diffs) > 0:
        p = stats.ttest_rel(ours, base).pvalue
        assert sda["paired t p"] == ("<0.001" if p < 0.001 else f"{p:.3f}")
        assert sda["significant at 5 %"] == ("yes" if p < 0.05 else "no")


def test_command_line_compares_any_two_sets_of_runs(tiny_sweep, capsys):
    """``python -m sdbert.analysis.significance RUNS --against RUNS``: the same numbers as ``compare_runs``,
    from the run folders' saved predictions; a folder without runs is one line on stderr and exit 1."""
    from sdbert.analysis.significance import main

    runs = {(r.strategy, r.seed): r for r in find_runs([tiny_sweep]).runs}
    mine, theirs = [runs["sda", 1].path, runs["sda", 2].path], [runs["base", 1].path, runs["base", 2].path]
    assert main([*map(str, mine), "--against", *map(str, theirs), "--label", "SDA", "--against-label", "BASE"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SDA: error ") and " · BASE: " in out[0]
    expected = compare_runs([load_run(p) for p in mine], [load_run(p) for p in theirs], "test")
    assert len(out) == 3 and "2 pair(s) by seed" in out[0]
    assert out[1].startswith("Δ error ") and "over seeds · paired t p " in out[1]
    assert out[1].endswith("yes" if expected.significant else "no")
    assert f"Δ error {expected.delta:+.2f} pp [{expected.ci_low:+.2f}, {expected.ci_high:+.2f}]" in out[2]
    p = "<0.001" if expected.p_value < 0.001 else f"{expected.p_value:.3f}"
    assert f"bootstrap p {p}" in out[2]
    assert main([str(runs["sda", 1].path), "--against", str(tiny_sweep / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not exist" in err
