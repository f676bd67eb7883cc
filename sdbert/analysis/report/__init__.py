"""Tables and figures in the paper's layout, from run directories alone (offline, after the fact).

    python -m sdbert.analysis.report logs/train/multiruns/table3/<time> [more dirs ...] [--out DIR]   # or sdbert-report

Reads every run under the given directories (``.hydra/config.yaml``, ``metrics.json``,
``csv/metrics.csv``, ``predictions/``) and every ``ensemble.json`` written by ``sdbert.analysis.ensemble``,
and writes into ``--out`` (default ``<first dir>/report``):

* ``report.md``: the runs found, and those that failed, did not finish, never started (jobs listed
  in a sweep's ``multirun.yaml`` without a run directory) or were superseded by a rerun; the results
  table in the layout of the paper's Table 3 / Table 4 (test error % for classification sets,
  accuracy % for NLI, mean ± std over seeds, Avg. Δ, the paper's number in brackets); a Table 2
  layout when the teacher size K varies; the figures.
* ``figure3_lambda_<set>.png`` (test error over λ), ``figure4_stability_<set>.png`` (boxplot over
  seeds), ``figure5_epoch_error_<set>.png`` (test error per epoch; needs ``callbacks=with_epoch_test``),
  ``figure6_losses_<dataset>.png`` (CE and MSE loss over optimizer steps), each drawn where the runs
  hold what it needs, otherwise report.md says why not.
* ``runs.csv``: one line per run (status, setup, seeds, test metrics).

report.md also holds the paired comparison of every strategy with BASE on each test set
(:mod:`sdbert.analysis.significance`): Δ error with a paired-bootstrap 95 % CI and p-value, McNemar per seed.

Modules, each importing only those above it: ``collect`` (the data model: columns, cells, rows; runs and
ensembles read into it, as error %), ``paper_numbers`` (the paper's numbers as error %, Avg. Δ), ``tables``
(Markdown; NLI columns shown as accuracy), ``figures`` (PNG), ``cli`` (report.md, runs.csv, the command).
"""

from sdbert.analysis.report.cli import main, write_report
from sdbert.analysis.report.collect import Results, collect
from sdbert.analysis.report.paper_numbers import paper_errors, relative_error_change

__all__ = ["Results", "collect", "main", "paper_errors", "relative_error_change", "write_report"]
