"""Export a trained model as a Hugging Face folder: ``python -m sdbert.export RUN_OR_CKPT OUT_DIR``.

The folder (``config.json`` with ``id2label``/``label2id``, ``model.safetensors``, the tokenizer files and
a ``README.md`` model card) loads unchanged with ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification")``.

sdbert's classifier is encoder → pooled [CLS] → dropout → linear (eq. 1), which is exactly the head of
Hugging Face's ``BertForSequenceClassification`` (pooler → dropout → classifier): ``encoder.*`` becomes the
base model (``bert.*``) and ``classifier.*`` stays ``classifier.*``. Where the Hugging Face class of the
encoder's architecture has another head (MPNet, RoBERTa: dense → tanh → linear on the raw [CLS]), or with
``model.pooling=cls`` (the raw [CLS] state: no Hugging Face class uses it under a single linear layer),
there is no equivalent and the export is refused in one line. Every export is checked: the Hugging Face
model's logits must equal sdbert's on a probe batch before anything is written.

Which weights: the reported model (the student, or the parameter average of a strategy that reports one), or
another model the strategy's ``describe()`` lists as exportable (``--model teacher``: an averaged teacher; a
voted teacher is K models and has no single export).
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
from sdbert.paths import EXPORT_DIR
from sdbert.run import RunHooks
from sdbert.strategies import REPORTED
from sdbert.trained import Trained, TrainedModelError, load_trained

#: largest |logit| difference between sdbert and the exported model on the probe batch (fp32)
MAX_LOGIT_DIFF = 1e-4


class ExportError(TrainedModelError):
    """The model has no Hugging Face equivalent, or the export failed its check."""


def _probe_inputs(tokenizer: Any, pair: bool) -> dict[str, Any]:
    texts = ["A short probe sentence.", "Another, somewhat longer probe sentence for the exported model!"]
    args = (texts, list(reversed(texts))) if pair else (texts,)
    return dict(tokenizer(*args, padding=True, truncation=True, max_length=64, return_tensors="pt"))


def _huggingface_twin(model: Any, labels: list[str]) -> Any:
    """An untrained ``transformers`` model with sdbert's head for ``model`` (a SequenceClassifier), or
    :class:`ExportError` where the architecture's Hugging Face head is another one."""
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    if model.pooling != "pooler":
        raise ExportError(
            f"model.pooling={model.pooling} (the raw [CLS] state under a linear layer) has no Hugging Face "
            "equivalent (BertForSequenceClassification uses the pooled [CLS]); train with model.pooling=pooler "
            "to export, or predict with python -m sdbert.predict on the run"
        )
    config = copy.deepcopy(model.encoder.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.classifier_dropout = model.dropout.p
    try:
        hf = AutoModelForSequenceClassification.from_config(config)
    except ValueError as err:
        raise ExportError(f"{type(model.encoder).__name__} has no Hugging Face classification class ({err})") from None
    base = getattr(hf, hf.base_model_prefix, None)
    head = getattr(hf, "classifier", None)
    if not isinstance(head, nn.Linear) or getattr(base, "pooler", None) is None:
        raise ExportError(
            f"{type(hf).__name__}'s head ({type(head).__name__}) is not sdbert's (pooled [CLS] → dropout → "
            "linear), so this model has no Hugging Face equivalent; predict with python -m sdbert.predict instead"
        )
    return hf


def check_exportable(cfg: Any) -> None:
    """Raise :class:`ExportError` now (before training, for ``export=true``) where the export of ``cfg.model``
    would be refused; builds the model's structure only (meta device: no weights, no memory)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from sdbert.classifier import SequenceClassifier
    from sdbert.sources.models import hub_error, resolve_pretrained

    model_cfg = cfg.model
    try:
        config = AutoConfig.from_pretrained(resolve_pretrained(str(model_cfg.name_or_path)))
    except (OSError, ValueError) as err:
        raise hub_error(str(model_cfg.name_or_path), err) from err
    if model_cfg.get("random_init"):
        config.update(dict(model_cfg.random_init))
    labels = [str(n) for n in cfg.dataset.label_names]
    with torch.device("meta"):
        model = SequenceClassifier(AutoModel.from_config(config), num_labels=len(labels),
                                   dropout=float(model_cfg.get("dropout", 0.1)),
                                   pooling=str(model_cfg.get("pooling", "pooler")))
        _huggingface_twin(model, labels)


class ExportAfterTest(RunHooks):
    """``export=true``: refuse an unexportable model before training; after testing, write the tested model
    as a Hugging Face folder ``<run dir>/hf`` (its path goes into ``metrics.json`` as ``export``)."""

    def before(self, cfg: Any) -> None:
        check_exportable(cfg)

    def after_test(self, cfg: Any, summary: dict[str, Any]) -> None:
        import logging

        output_dir = Path(cfg.paths.output_dir)
        trained = load_trained(output_dir, checkpoint="last" if summary["tested_checkpoint"] == "last" else "best")
        trained.summary = summary
        out = export_trained(trained, output_dir / EXPORT_DIR)
        logging.getLogger("sdbert").info("exported the tested model to %s", out)
        summary["export"] = str(out)


def to_huggingface(trained: Trained, which: str = REPORTED) -> Any:
    """The ``transformers`` sequence-classification model equivalent to ``trained``'s ``which`` model.

    Raises :class:`ExportError` where the architecture's Hugging Face head is not sdbert's head, or where
    the two models' logits differ on a probe batch.
    """
    import torch

    model = trained.model(which)
    hf = _huggingface_twin(model, trained.label_names)
    getattr(hf, hf.base_model_prefix).load_state_dict(model.encoder.state_dict())
    hf.classifier.load_state_dict(model.classifier.state_dict())
    hf.eval()
    from sdbert.sources.models import load_tokenizer

    probe = _probe_inputs(load_tokenizer(str(trained.cfg.model.name_or_path)), len(trained.text_fields) == 2)
    with torch.no_grad():
        diff = (hf(**probe).logits - model(**probe)).abs().max().item()
    if not diff <= MAX_LOGIT_DIFF:
        raise ExportError(
            f"the Hugging Face {type(hf).__name__} differs from sdbert's model by {diff:.2e} in the logits "
            f"(allowed {MAX_LOGIT_DIFF:g}): the architectures are not equivalent; nothing was written"
        )
    return hf


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
           checkpoint: str = "tested") -> Path:
    """Write the Hugging Face folder of ``source`` (run directory or checkpoint) to ``out_dir`` (atomically)."""
    return export_trained(load_trained(source, checkpoint), out_dir, which)


def export_trained(trained: Trained, out_dir: str | os.PathLike[str], which: str = REPORTED) -> Path:
    """Write the Hugging Face folder of an already loaded model (its ``summary`` goes into the model card)."""
    from transformers import AutoTokenizer

    from sdbert.sources.models import resolve_pretrained

    hf = to_huggingface(trained, which)
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(str(trained.cfg.model.name_or_path)))
    tokenizer.model_max_length = trained.max_length
    tokenizer.truncation_side = "right"
    out = Path(out_dir)
    with staged_dir(out) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(trained, which), encoding="utf-8")
        (tmp / "sdbert.json").write_text(
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
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdbert-export",
        description="Export a trained sdbert model (run directory or checkpoint) as a Hugging Face folder.",
    )
    parser.add_argument("source", help="a run directory (logs/train/runs/<time>) or a checkpoint inside one")
    parser.add_argument("out_dir", help="the folder to write (replaced if it exists)")
    parser.add_argument("--model", default=REPORTED, choices=[REPORTED, "teacher", "student"],
                        help="reported (what the run's metrics are of; default), or another model the strategy "
                        "evaluates and can export (its teacher, or the student beside a parameter average)")
    parser.add_argument("--checkpoint", default="tested", choices=["tested", "best", "last"],
                        help="with a run directory: the tested weights (default), best or last")
    args = parser.parse_args(argv)
    try:
        out = export(args.source, args.out_dir, which=args.model, checkpoint=args.checkpoint)
    except SdbertError as err:
        print(f"sdbert-export: error: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.model} model to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
