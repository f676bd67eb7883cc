"""Random-init BERT encoders of known geometries (no download): the benchmark's GPU models."""

from __future__ import annotations

from typing import Any, TypedDict

from sdbert.classifier import SequenceClassifier


class Geometry(TypedDict):
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


GEOMETRIES: dict[str, Geometry] = {
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
}


def random_bert(
    num_labels: int, geometry: str = "bert-base", dropout: float = 0.1, vocab_size: int = 30522, **_: Any
) -> SequenceClassifier:
    """sdbert's eq. (1) classifier on a random-init ``BertModel`` of ``geometry`` (SDPA attention).

    Extra keys (e.g. the replaced model config's ``name_or_path``, which still names the tokenizer)
    are accepted and ignored.
    """
    from transformers import BertConfig, BertForSequenceClassification

    # num_labels goes to the config's __post_init__ (**kwargs), which the dataclass signature does not show
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        classifier_dropout=dropout, num_labels=num_labels, **GEOMETRIES[geometry],
    )
    config._attn_implementation = "sdpa"
    return SequenceClassifier(BertForSequenceClassification(config)).train()
