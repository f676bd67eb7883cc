"""The classifier of eq. (1): a pretrained encoder plus a softmax layer on [CLS]."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from sdbert.sources.models import hub_error, quiet_transformers, resolve_pretrained


class SequenceClassifier(nn.Module):
    """Encoder + dropout + linear layer on the [CLS] representation: softmax(W h), eq. (1).

    ``pooling='pooler'`` uses BERT's pooled [CLS] (tanh layer), as the official fine-tuning code does;
    ``'cls'`` uses the raw last hidden state of [CLS]. Encoders without a pooler fall back to ``'cls'``.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1, pooling: str = "pooler") -> None:
        super().__init__()
        if pooling not in ("pooler", "cls"):
            raise ValueError(f"model.pooling must be 'pooler' or 'cls' (got {pooling!r})")
        self.encoder = encoder
        self.pooling = pooling if getattr(encoder, "pooler", None) is not None else "cls"
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        std = getattr(encoder.config, "initializer_range", 0.02)
        nn.init.normal_(self.classifier.weight, std=std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **inputs: Tensor) -> Tensor:
        """Logits of shape (batch, num_labels)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        h = out.pooler_output if self.pooling == "pooler" else out.last_hidden_state[:, 0]
        return self.classifier(self.dropout(h))

    def is_head(self, name: str) -> bool:
        """Whether a parameter belongs to the softmax layer (trained with the larger learning rate)."""
        return name.startswith("classifier.")


def compile_classifier(model: nn.Module) -> nn.Module:
    """Run ``model`` through ``torch.compile`` in place (the ``compile`` key of train.yaml; returns it).

    In place (``nn.Module.compile``), so parameter names, checkpoints and exports stay those of an eager
    model; ``dynamic`` shapes, as batches are padded to their own longest sequence; ``fallback_random``:
    dropout draws eager's masks from the per-batch seed, so a compiled run trains the eager run's model
    up to float rounding (other kernels, so not bit for bit).
    """
    model.compile(dynamic=True, options={"fallback_random": True})
    return model


def build_classifier(
    name_or_path: str,
    num_labels: int,
    dropout: float = 0.1,
    pooling: str = "pooler",
    random_init: dict[str, Any] | None = None,
    attn_implementation: str | None = "sdpa",
    label: str | None = None,
) -> SequenceClassifier:
    """Load (or, with ``random_init``, build from a shrunk config) the encoder and add the head.

    ``random_init`` overrides config fields and skips the pretrained weights: the tiny test and
    benchmark models are the embedded MiniLM's geometry cut down, with its tokenizer. ``label`` is the
    name runs record the model under (:func:`sdbert.checks.recorded_model`); it does not affect the model.
    """
    from transformers import AutoConfig, AutoModel

    quiet_transformers()
    resolved = resolve_pretrained(name_or_path)
    try:
        config = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as err:
        raise hub_error(name_or_path, err) from err
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(config, key):
            setattr(config, key, dropout)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if random_init:
        config.update(dict(random_init))
        encoder = AutoModel.from_config(config, **kwargs)
    else:
        try:
            encoder = AutoModel.from_pretrained(resolved, config=config, **kwargs)
        except (OSError, ValueError) as err:
            raise hub_error(name_or_path, err) from err
    encoder.float()
    # from_pretrained hands the encoder back in eval mode; Lightning keeps modules' modes, so without
    # this the encoder's dropout (0.1 in the recipe) would silently stay off during training.
    return SequenceClassifier(encoder, num_labels=num_labels, dropout=dropout, pooling=pooling).train()
