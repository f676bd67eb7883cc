"""Is a difference real? A strategy against BASE on the same test set, paired on the test examples.

Both methods were run with several seeds and tested on one test set; each run saved its predictions
(``predictions/<test>.pt``: ``probs`` [N, C] and ``labels`` [N], in the same order for every run of one
test set). The runs are paired by seed (seed *i* of the strategy with seed *i* of BASE); where the seeds
do not match, by sorted order, and the comparison says so. For pair *p* and example *i* let
``d[p, i] = wrong_strategy − wrong_base`` ∈ {−1, 0, 1}. Then:

* **Δ error** (percentage points) = 100 · mean over pairs and examples of ``d``: the strategy's mean
  test error minus BASE's, over the paired seeds (negative: the strategy makes fewer errors).
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

What it does not measure: the variation between seeds beyond the ones run. The interval says how
sure one can be that, on this test set's population, these seeds' models differ; the mean ± std over
seeds beside it shows how much a new seed would move the result.
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


class SignificanceError(RunDirError):
    """Runs that cannot be paired on their test examples (one line: which runs, what differs)."""


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
    #: how the runs were paired: ``by seed`` or ``by sorted order (...)``
    pairing: str = "by seed"
    alpha: float = ALPHA

    @property
    def n_pairs(self) -> int:
        return len(self.errors)

    @property
    def significant(self) -> bool:
        """The bootstrap p-value is below ``alpha`` (equivalently, the interval excludes 0)."""
        return self.p_value < self.alpha


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
    return PairedTest(
        errors=tuple(float(x) for x in 100.0 * wrong.mean(axis=1)),
        base_errors=tuple(float(x) for x in 100.0 * base_wrong.mean(axis=1)),
        n_examples=wrong.shape[1],
        delta=100.0 * float(pooled.mean()),
        ci_low=100.0 * low,
        ci_high=100.0 * high,
        p_value=p,
        mcnemar=tuple(mcnemar_p(a, b) for a, b in zip(wrong, base_wrong, strict=True)),
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
    wrong, base_wrong = [], []
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


def describe(test: PairedTest, name: str = "runs", against: str = "against") -> str:
    """Two lines: the errors of both sides and Δ with its interval, p-values and verdict."""
    return (
        f"{name}: error {spread(test.errors)} % · {against}: {spread(test.base_errors)} % "
        f"({test.n_pairs} pair(s) {test.pairing}, {test.n_examples} test examples)\n"
        f"Δ error {test.delta:+.2f} pp [{test.ci_low:+.2f}, {test.ci_high:+.2f}] · "
        f"bootstrap p {p_text(test.p_value)} · McNemar p per pair {mcnemar_text(test.mcnemar)} · "
        f"significant at {test.alpha:.0%}: {'yes' if test.significant else 'no'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sdbert.analysis.significance",
        description="Is the difference between two sets of runs real? A paired bootstrap (examples resampled, seed "
        "pairs pooled) and McNemar per pair, on the runs' saved test predictions; the second set is the reference.",
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
