"""Predict with a trained model: ``python -m sdbert.predict MODEL [TEXT ...] [--input FILE]``.

``MODEL`` is a run directory, a checkpoint inside one, or a folder written by ``sdbert.export``. Texts come
from the arguments, from ``--input`` (``.jsonl``, ``.csv`` or plain text, one example per line) or from
stdin. Sentence pairs (NLI datasets): JSONL/CSV name both of the dataset's text fields (e.g. ``premise``,
``hypothesis``; ``text``/``text_pair`` work too), plain text and arguments separate them with a TAB.

Output: one JSON line (or CSV row, ``--format csv``) per valid input, in input order, with ``line`` (the
input's line number; the argument's number for arguments; CSV: the row's last line), ``label`` (the most
probable class) and the probability of every class. Inputs are tokenised as in training (the run's
``max_length``, truncated on the right) and batched by length; the model runs on the GPU when there is one.
An exported folder is read through ``transformers``' ``pipeline("text-classification")``, the code path its
other users take.

Bad rows (an empty text, a missing pair field, bytes that are not UTF-8, invalid JSON) are reported on
stderr with their line numbers and skipped; the valid rows are still predicted and written, and the exit
status is 1 at the end. Blank lines at the end of the input are ignored (as training's readers ignore
them); an input with no example at all is refused in one line. A model that is not sdbert's is refused in
one line. When the reader of stdout stops early (``sdbert-predict ... | head``) it ends quietly with 141
(128 + SIGPIPE), as ``cat`` does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sdbert.errors import SdbertError
from sdbert.paths import EXPORT_META
from sdbert.strategies import REPORTED
from sdbert.textio import READERS, PredictError, arguments, input_format, read_input, write_rows


@dataclass(frozen=True)
class Progress:
    """How a prediction pass reports progress: whether at all, how often in a log, over how many examples."""

    show: bool
    every_n_seconds: float
    n_examples: int

    def start(self, total: int) -> Any:
        """The reporter of a pass of ``total`` steps (``advance(n)`` per step; a context manager)."""
        from sdbert.progress import PassProgress, console_pass

        if not self.show:
            return PassProgress()
        return console_pass("sdbert-predict: predicting", total, self.every_n_seconds, n_examples=self.n_examples)


class Predictor:
    """What prediction needs: the label names, the text fields, and class probabilities for texts."""

    label_names: list[str]
    text_fields: list[str]

    @property
    def pair(self) -> bool:
        return len(self.text_fields) == 2

    def probabilities(self, texts: Sequence[tuple[str, ...]], batch_size: int, progress: Progress) -> Any:
        """Class probabilities [N, C] (float32) for ``texts`` in input order, reporting through ``progress``."""
        raise NotImplementedError


@dataclass
class RunPredictor(Predictor):
    """A run's model through its strategy: tokenised as in training, batched by length."""

    label_names: list[str]
    text_fields: list[str]
    tokenizer: Any
    max_length: int
    logits: Callable[[dict[str, Any]], Any]
    device: Any

    def probabilities(self, texts: Sequence[tuple[str, ...]], batch_size: int, progress: Progress) -> Any:
        import torch

        columns = list(zip(*texts, strict=True))
        truncation = "longest_first" if self.pair else True
        enc = self.tokenizer(*[list(c) for c in columns], truncation=truncation, max_length=self.max_length,
                             padding=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i]))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        out = torch.empty(len(texts), len(self.label_names))
        with torch.inference_mode(), progress.start(len(batches)) as reporter:
            for batch in batches:
                features = [{k: enc[k][i] for k in keys} for i in batch]
                padded = self.tokenizer.pad(features, padding="longest", return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in padded.items()}
                out[batch] = torch.softmax(self.logits(inputs).float(), -1).cpu()
                reporter.advance(len(batch))
        return out


@dataclass
class ExportedPredictor(Predictor):
    """An exported folder through ``transformers``' ``pipeline("text-classification")``, as its users load it
    (the tokenizer's ``model_max_length`` is the run's ``max_length``; pairs as ``text``/``text_pair``)."""

    label_names: list[str]
    text_fields: list[str]
    pipe: Any

    def probabilities(self, texts: Sequence[tuple[str, ...]], batch_size: int, progress: Progress) -> Any:
        import torch

        inputs = [t[0] if len(t) == 1 else {"text": t[0], "text_pair": t[1]} for t in texts]
        index = {name: i for i, name in enumerate(self.label_names)}
        out = torch.empty(len(texts), len(self.label_names))
        chunk = 16 * batch_size
        with progress.start(-(-len(inputs) // chunk)) as reporter:
            for start in range(0, len(inputs), chunk):
                results = self.pipe(inputs[start : start + chunk], batch_size=batch_size, top_k=None,
                                    truncation=True, function_to_apply="softmax")
                for i, scores in enumerate(results, start):
                    for score in scores:
                        out[i, index[score["label"]]] = score["score"]
                reporter.advance(len(results))
        return out


# -- the model ----------------------------------------------------------------------------------------
def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_predictor(source: str | os.PathLike[str], which: str = REPORTED, checkpoint: str = "tested",
                   device: str = "auto") -> Predictor:
    """The predictor of a run directory, a checkpoint or an exported folder."""
    path = Path(source)
    dev = _device(device)
    if path.is_dir() and (path / "config.json").is_file() and not (path / ".hydra").is_dir():
        return _exported(path, which, dev)
    from sdbert.sources.models import load_tokenizer
    from sdbert.trained import load_trained

    trained = load_trained(path, checkpoint, device=dev)
    module = trained.module
    strategy = module.strategy
    models = strategy.describe().models
    if which not in models:
        raise PredictError(f"strategy {strategy.name} has no model '{which}' (it evaluates: {', '.join(models)})")
    tokenizer = load_tokenizer(str(trained.cfg.model.name_or_path))
    tokenizer.truncation_side = "right"  # as in training: keep the head of long texts

    def logits(inputs: dict[str, Any]) -> Any:
        return strategy.eval_logits(module.model, inputs, extras=which != REPORTED)[which]

    return RunPredictor(trained.label_names, trained.text_fields, tokenizer, trained.max_length, logits, dev)


def _exported(path: Path, which: str, device: Any) -> Predictor:
    from transformers import pipeline

    from sdbert.sources.models import quiet_transformers

    meta_file = path / EXPORT_META
    if not meta_file.is_file():
        raise PredictError(f"{path} is a Hugging Face folder but not an sdbert export (no {EXPORT_META}); "
                           "use transformers' pipeline('text-classification') for it")
    if which != REPORTED:
        raise PredictError(f"{path} is an exported model: it holds one model, so --model {which} does not apply")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    quiet_transformers()
    pipe = pipeline("text-classification", model=str(path), device=device)
    # a loaded config always has id2label, its keys turned into ints (num_labels is its length)
    id2label = cast("dict[int, str]", pipe.model.config.id2label)
    labels = [id2label[i] for i in range(len(id2label))]
    return ExportedPredictor(labels, list(meta["text_fields"]), pipe)


# -- prediction ---------------------------------------------------------------------------------------
def predict(predictor: Predictor, texts: Sequence[tuple[str, ...]], batch_size: int = 64,
            progress: bool | None = None, every_n_seconds: float = 30.0) -> Any:
    """Class probabilities [N, C] for ``texts`` in input order (float32).

    Progress (``progress``; None: from ten batches on) goes to stderr: a bar on a terminal, else a line
    at the start, one every ``every_n_seconds`` and one at the end (:func:`sdbert.progress.console_pass`).
    """
    import torch

    if not texts:
        return torch.zeros(0, len(predictor.label_names))
    show = progress if progress is not None else -(-len(texts) // batch_size) >= 10
    return predictor.probabilities(texts, batch_size, Progress(show, every_n_seconds, len(texts)))


def _reader_gone() -> int:
    """stdout's reader stopped reading (``sdbert-predict ... | head``): end quietly, as ``cat`` does, with
    128 + SIGPIPE; what is still buffered goes nowhere instead of raising again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + int(signal.SIGPIPE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sdbert-predict",
        description="Predict labels with a trained sdbert model (run directory, checkpoint or exported folder).",
        epilog="Sentence pairs: JSONL/CSV fields named as the dataset's (e.g. premise, hypothesis) or text/"
               "text_pair; plain text and arguments as premise<TAB>hypothesis.",
    )
    parser.add_argument("model", help="run directory, checkpoint inside one, or a folder from sdbert-export")
    parser.add_argument("texts", nargs="*", help="texts to classify (none: read --input or stdin)")
    parser.add_argument("--input", "-i", help="a .jsonl, .csv or plain-text file (one example per line); - for stdin")
    parser.add_argument("--input-format", default="auto", choices=["auto", *READERS],
                        help="how to read --input/stdin (auto: by file extension; stdin: txt)")
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "csv"], help="output format")
    parser.add_argument("--output", "-o", help="write here instead of stdout")
    parser.add_argument("--model", dest="which", default=REPORTED, choices=[REPORTED, "teacher", "student"],
                        help="which of the run's evaluated models (default: the reported one)")
    parser.add_argument("--checkpoint", default="tested", choices=["tested", "best", "last"],
                        help="with a run directory: the tested weights (default), best or last")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (stderr) on long inputs")
    args = parser.parse_intermixed_args(argv)  # options may follow the texts
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be >= 1 (got {args.batch_size})")
        if args.texts and args.input:
            raise PredictError("give texts as arguments or --input, not both")
        predictor = load_predictor(args.model, args.which, args.checkpoint, args.device)
        fields = predictor.text_fields
        if args.texts:
            examples = arguments(args.texts, fields)
        else:
            from_stdin = args.input in (None, "-")
            if from_stdin and sys.stdin.isatty():
                raise PredictError("no input: give texts as arguments, --input FILE, or pipe them to stdin")
            if from_stdin:
                raw = sys.stdin.buffer.read()
            else:
                try:
                    raw = Path(args.input).read_bytes()
                except OSError as err:
                    raise PredictError(f"cannot read --input {args.input}: {err.strerror}") from None
            fmt = input_format(None if from_stdin else args.input, args.input_format)
            examples = read_input(raw, fmt, fields)
            if not examples:
                source = "stdin" if from_stdin else f"--input {args.input}"
                what = "is empty or has only a header row" if fmt == "csv" else "is empty"
                raise PredictError(f"no input: {source} {what}; give one example per line")
        good = [ex for ex in examples if ex.texts is not None]
        bad = [ex for ex in examples if ex.texts is None]
        probs = predict(predictor, [ex.texts for ex in good if ex.texts is not None], args.batch_size,
                        progress=False if args.no_progress else None)
    except SdbertError as err:
        print(f"sdbert-predict: error: {err}", file=sys.stderr)
        return 1
    if args.output:
        from sdbert.io import write_text

        buffer = io.StringIO()
        write_rows(good, probs, predictor.label_names, args.format, buffer)
        write_text(args.output, buffer.getvalue())
    else:
        try:
            write_rows(good, probs, predictor.label_names, args.format, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_gone()
    for ex in bad:
        print(f"sdbert-predict: line {ex.line}: {ex.error} (skipped)", file=sys.stderr)
    if bad:
        print(f"sdbert-predict: {len(bad)} of {len(examples)} inputs skipped; {len(good)} predicted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
