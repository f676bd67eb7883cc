"""Runs under folders: sweep directories, the jobs they were to run, setups and their seeds.

A sweep directory holds ``multirun.yaml`` and one run directory per job; from ``multirun.yaml`` the jobs a
sweep meant to run are known, so jobs that never started can be named too. Runs that differ only in
their seeds are one setup (:func:`group_runs`, by :attr:`Run.group_key`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sdbert.analysis.rundirs import Run, RunDirError, load_run
from sdbert.paths import CONFIG_FILE, ENSEMBLE_FILE, SWEEP_FILE


@dataclass
class Sweep:
    """A Hydra multirun directory and the jobs its ``multirun.yaml`` says it was to run."""

    path: Path
    jobs: list[list[str]] | None
    problem: str | None = None

    def describe_job(self, job: Sequence[str]) -> str:
        """The job's swept overrides only (``strategy=sda seed=2``): what tells it from its siblings."""
        values: dict[str, set[str]] = {}
        for other in self.jobs or []:
            for item in other:
                key, _, value = item.partition("=")
                values.setdefault(key, set()).add(value)
        swept = [item for item in job if len(values.get(item.partition("=")[0], ())) > 1]
        return " ".join(swept or job)


def expand_sweep(params: dict[str, Any] | None, task_overrides: Sequence[str]) -> list[list[str]]:
    """The job override lists Hydra's basic sweeper makes of ``hydra.sweeper.params`` plus the command line.

    Job ``i`` is the ``i``-th list (the job number): the product of each key's values, in the order the
    keys first appear, the last key varying fastest. A key given again (on the command line) replaces the
    earlier values of that key in its place, as in Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [f"{k}={v}" for k, v in (params or {}).items()] + list(task_overrides)
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(args):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise RunDirError(f"'{override.input_line}' is an interval sweep, which Hydra's basic sweeper cannot run")
    return [list(job) for job in itertools.product(*choices.values())]


def load_sweep(path: Path) -> Sweep:
    try:
        cfg = OmegaConf.load(path / SWEEP_FILE)
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
        task = OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []
        params_dict = OmegaConf.to_container(params) if params is not None else {}
        return Sweep(path, expand_sweep(params_dict, [str(t) for t in task]))  # type: ignore[arg-type]
    except Exception as err:  # e.g. a glob() sweep, which needs the config repository to expand
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Sweep(path, None, f"its jobs could not be listed from {SWEEP_FILE} ({reason})")


@dataclass
class Collection:
    """Every run and sweep found under some paths, with what is missing."""

    runs: list[Run]
    sweeps: list[Sweep]
    #: ``ensemble.json`` files written by ``python -m sdbert.analysis.ensemble``
    ensembles: list[Path] = field(default_factory=list)

    def missing_jobs(self) -> list[tuple[Sweep, int, list[str]]]:
        """Jobs a sweep was to run that have no run directory at all (never started), by job number."""
        present = {frozenset(r.overrides) for r in self.runs}
        out = []
        for sweep in self.sweeps:
            for num, job in enumerate(sweep.jobs or []):
                if frozenset(job) not in present:
                    out.append((sweep, num, job))
        return out


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> Collection:
    """Run directories (``.hydra/config.yaml``) and sweep directories (``multirun.yaml``) under ``paths``."""
    runs: dict[Path, Run] = {}
    sweeps: dict[Path, Sweep] = {}
    ensembles: set[Path] = set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise RunDirError(f"{root} does not exist; pass a sweep directory (logs/train/multiruns/...) or run dirs")
        if (root / CONFIG_FILE).is_file():
            runs.setdefault(root.resolve(), load_run(root))
            continue
        found = False
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            dirnames.sort()
            if SWEEP_FILE in filenames:
                sweeps.setdefault(here.resolve(), load_sweep(here))
                found = True
            if ENSEMBLE_FILE in filenames:
                ensembles.add((here / ENSEMBLE_FILE).resolve())
                found = True
            if (here / CONFIG_FILE).is_file():
                runs.setdefault(here.resolve(), load_run(here))
                found = True
                dirnames[:] = []  # a run directory holds no further runs
            else:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if not found:
            raise RunDirError(f"no run directories (with {CONFIG_FILE}) or ensembles under {root}")
    return Collection(
        runs=sorted(runs.values(), key=lambda r: str(r.path)), sweeps=list(sweeps.values()), ensembles=sorted(ensembles)
    )


def describe_difference(a: Run, b: Run) -> str:
    """The first thing two runs' setups differ in, for a one-line message."""
    def show(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    checks: list[tuple[str, Callable[[Run], Any]]] = [
        ("model", lambda r: r.identity.get("model.name_or_path")),
        ("dataset", lambda r: r.dataset),
        ("label set (dataset.label_names)", lambda r: r.label_names),
        ("method", lambda r: r.method.label),
    ]
    for what, get in checks:
        if get(a) != get(b):
            return f"{what}: {show(get(a))} ({a.path}) vs {show(get(b))} ({b.path})"
    keys = [k for k in sorted(set(a.identity) | set(b.identity)) if a.identity.get(k) != b.identity.get(k)]
    if not keys:
        return "nothing but seeds"
    more = f" and {len(keys) - 1} more key(s)" if len(keys) > 1 else ""
    k = keys[0]
    return f"{k}: {show(a.identity.get(k))} ({a.path}) vs {show(b.identity.get(k))} ({b.path}){more}"


def group_runs(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by setup (everything but the seeds), each group ordered by (seed, data_seed)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    return {k: sorted(v, key=lambda r: (r.seed, r.data_seed, str(r.path))) for k, v in groups.items()}


def latest_per_seed(runs: Iterable[Run]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """One run per (setup, seed, data_seed) when a job was run more than once: the newest finished one
    (else the newest). Returns the kept runs and ``(superseded, kept instead)`` pairs, so they can be named.
    """
    best: dict[tuple[str, int, int], Run] = {}
    superseded: list[tuple[Run, Run]] = []
    for run in sorted(runs, key=lambda r: (r.ok, r.mtime)):
        key = (run.group_key, run.seed, run.data_seed)
        if key in best:
            superseded.append((best[key], run))
        best[key] = run
    return sorted(best.values(), key=lambda r: str(r.path)), superseded
