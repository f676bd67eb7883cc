"""Is a difference real? A strategy against BASE on the same test set, paired by seed and by test example.

Both methods were run with several seeds and tested on one test set; each run saved its predictions
(``predictions/<test>.pt``: ``probs`` [N, C] and ``labels`` [N], in the same order for every run of one
test set). The runs are paired by seed (seed *i* of the strategy with seed *i* of BASE); where the seeds
do not match, by sorted order, and the comparison says so. For pair *p* and example *i* let
``d[p, i] = wrong_strategy − wrong_base`` ∈ {−1, 0, 1}. Then:

* **Δ error** (percentage points) = 100 · mean over pairs and examples of ``d``: the strategy's mean
  test error minus BASE's, over the paired seeds (negative: the strategy makes fewer errors).
* **Seed-level paired t-test** (the primary answer: "will it help my next run?"): one error difference
  ``e_p = error_strategy(p) − error_BASE(p)`` per seed pair, a one-sample t-test of mean ``e`` = 0 (scipy),
  its ``1 − alpha`` t-interval, and the smallest |Δ| that ``n`` pairs with this spread of ``e`` would
  detect at 80 % power (statsmodels' ``TTestPower``: effect size × std of ``e``). New seeds are the
  population: the test examples are fixed.
* **Paired bootstrap** (pooling the seed pairs): the test examples are resampled with replacement, the
  same resampled examples for every pair, and Δ is recomputed; the 2.5 and 97.5 percentiles of
  10,000 resamples are the 95 % confidence interval, and the two-sided p-value is
  ``min(1, 2 · min(P*(Δ* ≤ 0), P*(Δ* ≥ 0)))`` (with the usual +1 on counts), so p < 0.05 exactly
  when the interval lies on one side of 0. Δ depends on an example only through its pooled
  difference ``D_i = mean_p d[p, i]``, so resampling examples means drawing how often each distinct
  value of ``D`` occurs from a multinomial: the same distribution as resampling indices, at a cost
  per resample of the number of distinct values (at most 2·pairs + 1) instead of N. Seeded: the same
  inputs give the same numbers.
* **McNemar** per seed pair (statsmodels): the discordant examples (one right, the other wrong),
  exact binomial when fewer than 25, else χ² with continuity correction.

The report (``sdbert-report``) compares every strategy with BASE of the same setup. Any two sets of
runs of one test set (grouped against shuffled batches, two learning rates, ...) compare from the
command line; the second set plays BASE's part, and pairs are made by (seed, data_seed) as above:

    python -m sdbert.analysis.significance RUNS... --against RUNS... [--test test] [--label A --against-label B]

The two tests answer two questions. The seed-level test: would a new seed's run of the strategy beat a
new seed's run of BASE on this test set? The bootstrap: on new test examples, do *these* seeds' models
differ? The bootstrap's interval is narrow (thousands of examples) and blind to the seed spread, so it
can call a difference that a new seed would not reproduce "significant"; the verdict is the seed-level
test's wherever there are at least two pairs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdbert.analysis.rundirs import Run, RunDirError
from sdbert.analysis.sweeps import find_runs

ALPHA = 0.05
N_RESAMPLES = 10_000
SEED = 0
#: below this many discordant examples McNemar's test uses the exact binomial distribution
EXACT_BELOW = 25
#: the power at which the smallest detectable difference is computed
POWER = 0.8


class SignificanceError(RunDirError):
    """Runs that cannot be paired on their test examples (one line: which runs, what differs)."""


@dataclass(frozen=True)
class SeedTest:
    """The paired t-test over per-seed error differences (points): strategy − BASE, one value per seed pair."""

    n_pairs: int
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    #: the std (ddof 1) of the per-seed differences
    std: float
    #: the smallest |Δ| these many pairs detect at ``POWER`` with a two-sided test at ``alpha``
    detectable: float


def seed_test(differences: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> SeedTest | None:
    """The seed-level test of per-seed error differences; None for fewer than two pairs (no spread to judge)."""
    from scipy import stats
    from statsmodels.stats.power import TTestPower

    e = np.asarray(differences, dtype=float)
    n = e.size
    if n < 2:
        return None
    mean, std = float(e.mean()), float(e.std(ddof=1))
    effect = float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided"))
    if std < 1e-9:  # every pair differs by the same amount (up to rounding): the t statistic is undefined
        return SeedTest(n, mean, mean, mean, 1.0 if mean == 0.0 else 0.0, 0.0, 0.0)
    result = stats.ttest_1samp(e, 0.0)
    ci = result.confidence_interval(1 - alpha)
    return SeedTest(n, mean, float(ci.low), float(ci.high), float(result.pvalue), std, effect * std)


@dataclass(frozen=True)
class PairedTest:
    """A strategy against BASE on one test set, pooled over seed pairs (errors in %, Δ in points)."""

    #: the strategy's and BASE's test error (%) per seed pair, in pair order
    errors: tuple[float, ...]
    base_errors: tuple[float, ...]
    n_examples: int
    #: mean error difference, strategy − BASE, in percentage points
    delta: float
    ci_low: float
    ci_high: float
    #: two-sided paired-bootstrap p-value (pooled over the pairs)
    p_value: float
    #: McNemar's p-value per seed pair
    mcnemar: tuple[float, ...]
    #: the seed-level paired t-test (None with one pair)
    seeds: SeedTest | None = None
    #: how the runs were paired: ``by seed`` or ``by sorted order (...)``
    pairing: str = "by seed"
    alpha: float = ALPHA

    @property
    def n_pairs(self) -> int:
        return len(self.errors)

    @property
    def significant(self) -> bool:
        """The primary test's p-value is below ``alpha``: the seed-level t-test's, or with one pair the
        bootstrap's (whose interval then excludes 0)."""
        return (self.seeds.p_value if self.seeds is not None else self.p_value) < self.alpha


def mcnemar_p(wrong: np.ndarray, base_wrong: np.ndarray) -> float:
    """McNemar's two-sided p-value for one pair of runs on the same examples (1.0 when they never disagree)."""
    from statsmodels.stats.contingency_tables import mcnemar

    b = int(np.sum(~wrong & base_wrong))  # the strategy right where BASE is wrong
    c = int(np.sum(wrong & ~base_wrong))
    if b + c == 0:
        return 1.0
    table = [[int(np.sum(~wrong & ~base_wrong)), b], [c, int(np.sum(wrong & base_wrong))]]
    return float(mcnemar(table, exact=b + c < EXACT_BELOW, correction=True).pvalue)


def paired_bootstrap(diff: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                     alpha: float = ALPHA) -> tuple[float, float, float]:
    """Percentile ``1 − alpha`` interval and two-sided p-value of the mean of ``diff`` (one value per test
    example) under resampling of the examples with replacement. Returns ``(low, high, p)``."""
    n = diff.size
    if n == 0:
        raise SignificanceError("no test examples to compare")
    values, counts = np.unique(diff, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=n_resamples)  # how often each distinct value is drawn
    means = draws @ values / n
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    below = (1 + np.count_nonzero(means <= 0)) / (n_resamples + 1)
    above = (1 + np.count_nonzero(means >= 0)) / (n_resamples + 1)
    return float(low), float(high), float(min(1.0, 2 * min(below, above)))


def paired_test(wrong: np.ndarray, base_wrong: np.ndarray, *, pairing: str = "by seed",
                n_resamples: int = N_RESAMPLES, seed: int = SEED, alpha: float = ALPHA) -> PairedTest:
    """The comparison from which examples each run got wrong: boolean arrays [pairs, examples], row ``p`` of
    ``wrong`` paired with row ``p`` of ``base_wrong``, every row over the same examples in the same order."""
    wrong, base_wrong = np.atleast_2d(np.asarray(wrong, bool)), np.atleast_2d(np.asarray(base_wrong, bool))
    if wrong.shape != base_wrong.shape or wrong.shape[0] == 0:
        raise SignificanceError(f"cannot pair {wrong.shape[0]} run(s) with {base_wrong.shape[0]} BASE run(s) "
                                f"on {wrong.shape[1]} vs {base_wrong.shape[1]} test examples")
    pooled = (wrong.astype(np.int8) - base_wrong.astype(np.int8)).mean(axis=0)  # D_i, in [-1, 1]
    low, high, p = paired_bootstrap(pooled, n_resamples=n_resamples, seed=seed, alpha=alpha)
    errors, base_errors = 100.0 * wrong.mean(axis=1), 100.0 * base_wrong.mean(axis=1)
    return PairedTest(
        errors=tuple(float(x) for x in errors),
        base_errors=tuple(float(x) for x in base_errors),
        n_examples=wrong.shape[1],
        delta=100.0 * float(pooled.mean()),
        ci_low=100.0 * low,
        ci_high=100.0 * high,
        p_value=p,
        mcnemar=tuple(mcnemar_p(a, b) for a, b in zip(wrong, base_wrong, strict=True)),
        seeds=seed_test(errors - base_errors, alpha=alpha),
        pairing=pairing,
        alpha=alpha,
    )


def pair_runs(runs: Sequence[Run], base: Sequence[Run]) -> tuple[list[tuple[Run, Run]], str]:
    """Pairs ``(run, BASE run)`` with the same (seed, data_seed); where no seeds match, by sorted order.

    Returns the pairs and how they were made (``by seed``, naming the runs left unpaired, or
    ``by sorted order (...)``).
    """
    def key(run: Run) -> tuple[int, int]:
        return (run.seed, run.data_seed)

    def show(keys: Sequence[tuple[int, int]]) -> str:
        return ", ".join(str(s) if len({d for _, d in keys}) <= 1 else f"{s}/{d}" for s, d in keys)

    runs, base = sorted(runs, key=key), sorted(base, key=key)
    mine, theirs = {key(r): r for r in runs}, {key(r): r for r in base}
    common = sorted(set(mine) & set(theirs))
    unique = len(mine) == len(runs) and len(theirs) == len(base)
    if common and unique:
        left = sorted((set(mine) | set(theirs)) - set(common))
        note = "by seed" + (f" (unpaired seeds {show(left)})" if left else "")
        return [(mine[k], theirs[k]) for k in common], note
    pairs = list(zip(runs, base, strict=False))
    note = (f"by sorted order (seeds {show([key(r) for r in runs])} vs BASE {show([key(r) for r in base])} "
            "do not match)")
    return pairs, note


def _wrong(run: Run, test_name: str) -> tuple[np.ndarray, np.ndarray]:
    pred = run.predictions(test_name)
    labels = pred["labels"].numpy()
    return pred["probs"].argmax(-1).numpy() != labels, labels


def compare_runs(runs: Sequence[Run], base: Sequence[Run], test_name: str, *, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED, alpha: float = ALPHA) -> PairedTest:
    """``runs`` (one setup's seeds) against ``base`` (BASE's seeds) on ``test_name``, from saved predictions.

    Raises :class:`SignificanceError` (via :class:`RunDirError` for missing predictions) when the runs
    cannot be paired: no finished runs, or test sets with other labels or another order.
    """
    runs, base = [r for r in runs if r.ok], [r for r in base if r.ok]
    if not runs or not base:
        raise SignificanceError(f"no finished runs to pair on '{test_name}' ({len(runs)} vs {len(base)} BASE)")
    pairs, pairing = pair_runs(runs, base)
    reference: tuple[Run, np.ndarray] | None = None
    wrong: list[np.ndarray] = []
    base_wrong: list[np.ndarray] = []
    for run, base_run in pairs:
        for target, who in ((wrong, run), (base_wrong, base_run)):
            mistakes, labels = _wrong(who, test_name)
            if reference is None:
                reference = (who, labels)
            elif labels.shape != reference[1].shape or not np.array_equal(labels, reference[1]):
                raise SignificanceError(
                    f"runs {reference[0].path} and {who.path} saved other '{test_name}' labels "
                    f"({reference[1].size} vs {labels.size} examples, or another order); pair runs of one test set"
                )
            target.append(mistakes)
    return paired_test(np.stack(wrong), np.stack(base_wrong), pairing=pairing, n_resamples=n_resamples, seed=seed,
                       alpha=alpha)


def p_text(p: float) -> str:
    """A p-value as the report and the command line show it."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def spread(errors: Sequence[float]) -> str:
    """``mean ± sample std`` of per-seed errors (the mean alone for one seed)."""
    mean = f"{statistics.fmean(errors):.2f}"
    return f"{mean} ± {statistics.stdev(errors):.2f}" if len(errors) >= 2 else mean


def mcnemar_text(ps: Sequence[float]) -> str:
    """Each pair's McNemar p up to four pairs, else the range."""
    if len(ps) <= 4:
        return ", ".join(p_text(p) for p in ps)
    return f"{p_text(min(ps))} – {p_text(max(ps))}"


def seed_text(test: PairedTest) -> str:
    """The seed-level test as one phrase: Δ [t-interval], p, and the smallest detectable difference."""
    s = test.seeds
    if s is None:
        return "seed-level test: needs two seed pairs"
    return (f"Δ error {s.delta:+.2f} pp [{s.ci_low:+.2f}, {s.ci_high:+.2f}] over seeds · paired t p "
            f"{p_text(s.p_value)} · detectable at {POWER:.0%} power: {s.detectable:.2f} pp")


def describe(test: PairedTest, name: str = "runs", against: str = "against") -> str:
    """Three lines: the errors of both sides; the seed-level test (primary) and verdict; the pooled
    bootstrap and McNemar (secondary)."""
    return (
        f"{name}: error {spread(test.errors)} % · {against}: {spread(test.base_errors)} % "
        f"({test.n_pairs} pair(s) {test.pairing}, {test.n_examples} test examples)\n"
        f"{seed_text(test)} · significant at {test.alpha:.0%}: {'yes' if test.significant else 'no'}\n"
        f"test examples: Δ error {test.delta:+.2f} pp [{test.ci_low:+.2f}, {test.ci_high:+.2f}] · "
        f"bootstrap p {p_text(test.p_value)} · McNemar p per pair {mcnemar_text(test.mcnemar)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sdbert.analysis.significance",
        description="Is the difference between two sets of runs real? A paired t-test over the seed pairs' error "
        "differences (primary), a paired bootstrap (examples resampled, seed pairs pooled) and McNemar per pair, on "
        "the runs' saved test predictions; the second set is the reference.",
    )
    p.add_argument("runs", nargs="+", help="run or sweep directories of the first setup")
    p.add_argument("--against", nargs="+", required=True, help="run or sweep directories of the reference setup")
    p.add_argument("--test", default="test", help="which test set (default: test)")
    p.add_argument("--label", default="runs", help="the first setup's name in the output")
    p.add_argument("--against-label", default="reference", help="the reference setup's name in the output")
    args = p.parse_args(argv)
    try:
        test = compare_runs(find_runs(args.runs).runs, find_runs(args.against).runs, args.test)
    except RunDirError as err:
        print(f"sdbert significance: error: {err}", file=sys.stderr)
        return 1
    print(describe(test, args.label, args.against_label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
