"""Export a trained model as a Hugging Face folder: ``python -m sdbert.export RUN_OR_CKPT OUT_DIR``.

The folder (``config.json`` with ``id2label``/``label2id``, ``model.safetensors``, the tokenizer files and
a ``README.md`` model card) loads unchanged with ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification")``.

sdbert's classifier is the architecture's own Hugging Face sequence-classification model
(:mod:`sdbert.classifier`), so every architecture exports: the folder is that model's ``save_pretrained``.
Every export is checked: the folder, loaded back with ``AutoModelForSequenceClassification``, must give
sdbert's logits on a probe batch, else nothing is written.

Which weights: the reported model (the student, or the parameter average of a strategy that reports one), or
another model the strategy's ``describe()`` lists as exportable (``--model teacher``: an averaged teacher; a
voted teacher is K models and has no single export).

Where: the destination must be a new or empty folder, or, with ``--overwrite``, an earlier sdbert export
(it holds ``sdbert.json``); anything else (the run itself, a folder above it, the current folder, a file,
a folder of other files) is refused in one line before anything is loaded or written
(:func:`check_destination`). The folder is built beside the destination and swapped in whole.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

from sdbert.errors import SdbertError
from sdbert.io import staged_dir
from sdbert.paths import EXPORT_DIR, EXPORT_META
from sdbert.run import RunHooks
from sdbert.strategies import REPORTED
from sdbert.trained import Trained, TrainedModelError, load_trained

#: largest |logit| difference between sdbert and the exported model on the probe batch (fp32)
MAX_LOGIT_DIFF = 1e-4


class ExportError(TrainedModelError):
    """The exported folder does not give sdbert's logits when loaded back."""


class DestinationError(SdbertError, ValueError):
    """The export's destination holds something the export did not write (or an earlier export, without
    ``--overwrite``); nothing was written."""


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is an sdbert export: the Hugging Face ``config.json`` beside sdbert's ``sdbert.json``."""
    return (folder / EXPORT_META).is_file() and (folder / "config.json").is_file()


def check_destination(out_dir: str | os.PathLike[str], overwrite: bool = False,
                      source: str | os.PathLike[str] | None = None) -> Path:
    """``out_dir`` as a path the export may write, or :class:`DestinationError` naming what is there.

    Allowed: a folder that does not exist yet, an empty folder, and with ``overwrite`` an earlier sdbert
    export (:func:`is_export`). Refused: a symbolic link, a file, the current folder or one above it, the
    exported run's folder or one above it (``source``), and any other non-empty folder.
    """
    out = Path(out_dir).expanduser()
    where = out.resolve()
    cwd = Path.cwd().resolve()
    if out.is_symlink():
        raise DestinationError(f"{out_dir} is a symbolic link; name the folder itself or a new one")
    if out.exists() and not out.is_dir():
        raise DestinationError(f"{out_dir} is an existing file, not a folder; name a new folder for the export")
    above = next((p for p in where.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise DestinationError(f"{out_dir} lies under {above}, which is a file; name a folder elsewhere")
    if where == cwd or where in cwd.parents:
        raise DestinationError(f"{out_dir} is the current folder or holds it; name a new folder, e.g. out/hf")
    if source is not None:
        src = Path(source).expanduser().resolve()
        if where == src or where in src.parents:
            run = src.parent.parent if src.is_file() else src
            raise DestinationError(f"{out_dir} holds the run being exported ({source}); name a new folder, "
                                   f"e.g. {run / EXPORT_DIR}")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not is_export(out):
        raise DestinationError(f"{out_dir} is a folder of other files, not an earlier sdbert export "
                               f"(no {EXPORT_META}); name a new or empty folder")
    if not overwrite:
        raise DestinationError(f"{out_dir} holds an earlier sdbert export; pass --overwrite to replace it, "
                               "or name a new folder")
    return out


def _probe_inputs(tokenizer: Any, pair: bool) -> dict[str, Any]:
    texts = ["A short probe sentence.", "Another, somewhat longer probe sentence for the exported model!"]
    args = (texts, list(reversed(texts))) if pair else (texts,)
    return dict(tokenizer(*args, padding=True, truncation=True, max_length=64, return_tensors="pt"))


class ExportAfterTest(RunHooks):
    """``export=true``: refuse an unusable destination before training; after testing, write the tested model
    as a Hugging Face folder ``<run dir>/hf`` (its path goes into ``metrics.json`` as ``export``)."""

    def before(self, cfg: Any) -> None:
        check_destination(Path(cfg.paths.output_dir) / EXPORT_DIR, overwrite=True)

    def after_test(self, cfg: Any, summary: dict[str, Any]) -> None:
        import logging

        output_dir = Path(cfg.paths.output_dir)
        trained = load_trained(output_dir, checkpoint="last" if summary["tested_checkpoint"] == "last" else "best")
        trained.summary = summary
        out = export_trained(trained, output_dir / EXPORT_DIR, overwrite=True)
        logging.getLogger("sdbert").info("exported the tested model to %s", out)
        summary["export"] = str(out)


def to_huggingface(trained: Trained, which: str = REPORTED) -> Any:
    """The ``transformers`` sequence-classification model of ``trained``'s ``which`` model (a copy, eval
    mode), its config naming the run's labels (``id2label``/``label2id``)."""
    hf = copy.deepcopy(trained.model(which).hf)
    labels = trained.label_names
    hf.config.id2label = dict(enumerate(labels))
    hf.config.label2id = {name: i for i, name in enumerate(labels)}
    return hf.eval()


def check_reloaded(folder: Path, trained: Trained, which: str) -> None:
    """Raise :class:`ExportError` where the model ``AutoModelForSequenceClassification`` loads from ``folder``
    differs from sdbert's ``which`` model by more than :data:`MAX_LOGIT_DIFF` on a probe batch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    probe = _probe_inputs(AutoTokenizer.from_pretrained(folder), len(trained.text_fields) == 2)
    with torch.no_grad():
        diff = (reloaded(**probe).logits - trained.model(which)(**probe)).abs().max().item()
    if not diff <= MAX_LOGIT_DIFF:
        raise ExportError(
            f"the exported {type(reloaded).__name__} differs from sdbert's model by {diff:.2e} in the logits "
            f"(allowed {MAX_LOGIT_DIFF:g}) once loaded back; nothing was written"
        )


def _metric_lines(summary: dict[str, Any]) -> list[str]:
    test = summary.get("test") or {}
    keys = sorted(k for k in test if k.rsplit("/", 1)[-1] in ("acc", "f1"))
    return [f"| `{k}` | {float(test[k]):.2f} |" for k in keys] or ["| (no test metrics in metrics.json) | |"]


def model_card(trained: Trained, which: str) -> str:
    """A short ``README.md``: what was trained (dataset, method and its keys, seeds), test metrics, how to load it."""
    cfg, summary = trained.cfg, trained.summary
    method = trained.module.strategy.describe()
    pair = len(trained.text_fields) == 2
    call = 'clf({"text": "A premise.", "text_pair": "A hypothesis."})' if pair else 'clf("Some text to classify.")'
    average = method.averaged and which == REPORTED
    checkpoint = trained.checkpoint.name
    if checkpoint == "best.ckpt":
        checkpoint += f" (epoch {summary.get('best_epoch', '?')} of {summary.get('epochs', '?')})"
    rows = [
        ("dataset", f"{cfg.dataset.name} (text fields: {', '.join(trained.text_fields)}; max_length "
                    f"{trained.max_length}, truncated on the right)"),
        ("labels", ", ".join(trained.label_names)),
        ("base model", str(cfg.model.name_or_path)
         + (" (geometry changed and randomly initialised: model.random_init)" if cfg.model.get("random_init") else "")),
        ("method", method.label),
        ("strategy keys", ", ".join(f"{k}={v}" for k, v in method.keys.items()) or "-"),
        ("seed / data_seed", f"{cfg.seed} / {cfg.data_seed}"),
        ("exported model", which + (" (the parameter average)" if average else "")),
        ("checkpoint", checkpoint),
    ]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [sdbert, self-distillation]",
        "---",
        "",
        f"# {cfg.dataset.name} classifier fine-tuned with sdbert ({method.label})",
        "",
        "Fine-tuned with sdbert, the self-ensemble / self-distillation strategies of",
        "Xu et al., *Improving BERT Fine-Tuning via Self-Ensemble and Self-Distillation*.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Test metrics (%, from the run's metrics.json; `f1` is macro-F1)",
        "",
        "| metric | value |",
        "|---|---|",
        *_metric_lines(summary),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'clf = pipeline("text-classification", model="PATH/TO/THIS/FOLDER", top_k=None)',
        f"print({call[:-1]}, truncation=True))",
        "```",
        "",
        f"Training truncated inputs to {trained.max_length} tokens: pass `truncation=True` (the tokenizer's",
        "`model_max_length` is set to it).",
        "",
    ]
    return "\n".join(lines)


def export(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], which: str = REPORTED,
           checkpoint: str = "tested", overwrite: bool = False) -> Path:
    """Write the Hugging Face folder of ``source`` (run directory or checkpoint) to ``out_dir`` (atomically);
    ``out_dir`` is checked first (:func:`check_destination`)."""
    check_destination(out_dir, overwrite, source)
    return export_trained(load_trained(source, checkpoint), out_dir, which, overwrite)


def export_trained(trained: Trained, out_dir: str | os.PathLike[str], which: str = REPORTED,
                   overwrite: bool = False) -> Path:
    """Write the Hugging Face folder of an already loaded model (its ``summary`` goes into the model card)."""
    from transformers import AutoTokenizer

    from sdbert.sources.models import quiet_transformers, resolve_pretrained

    quiet_transformers()
    check_destination(out_dir, overwrite, trained.run_dir)
    hf = to_huggingface(trained, which)
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(str(trained.cfg.model.name_or_path)))
    tokenizer.model_max_length = trained.max_length
    tokenizer.truncation_side = "right"
    out = Path(out_dir)
    with staged_dir(out) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(trained, which), encoding="utf-8")
        (tmp / EXPORT_META).write_text(
            json.dumps(
                {
                    "run_dir": str(trained.run_dir),
                    "checkpoint": str(trained.checkpoint),
                    "model": which,
                    "text_fields": trained.text_fields,
                    "max_length": trained.max_length,
                    "strategy": trained.module.strategy.describe().to_dict(),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        check_reloaded(tmp, trained, which)
        check_destination(out_dir, overwrite, trained.run_dir)  # still the folder checked before the writing
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdbert-export",
        description="Export a trained sdbert model (run directory or checkpoint) as a Hugging Face folder.",
    )
    parser.add_argument("source", help="a run directory (logs/train/runs/<time>) or a checkpoint inside one")
    parser.add_argument("out_dir", help="the folder to write: a new or empty one, or an earlier export (--overwrite)")
    parser.add_argument("--model", default=REPORTED, choices=[REPORTED, "teacher", "student"],
                        help="reported (what the run's metrics are of; default), or another model the strategy "
                        "evaluates and can export (its teacher, or the student beside a parameter average)")
    parser.add_argument("--checkpoint", default="tested", choices=["tested", "best", "last"],
                        help="with a run directory: the tested weights (default), best or last")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace out_dir when it holds an earlier sdbert export (nothing else is replaced)")
    args = parser.parse_args(argv)
    try:
        out = export(args.source, args.out_dir, which=args.model, checkpoint=args.checkpoint,
                     overwrite=args.overwrite)
    except SdbertError as err:
        print(f"sdbert-export: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"sdbert-export: error: could not write {args.out_dir}: {err.strerror or err} "
              f"({err.filename or args.out_dir}); nothing was replaced", file=sys.stderr)
        return 1
    print(f"exported {args.model} model to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
