"""Tiny random-init encoders of every supported architecture, saved as hub-format folders (no hub needed).

Each folder holds a base model built from its config class (2 layers x 32) and a tokenizer of the
model's own type built with ``tokenizers`` from a small vocabulary: WordPiece for BERT and ELECTRA,
byte-level BPE for RoBERTa and ModernBERT, a SentencePiece-style unigram for DeBERTa. Each tokenizer
pairs sentences with its model's template (RoBERTa ``<s> A </s></s> B </s>``, the others ``[CLS] A [SEP]
B [SEP]``) and returns ``token_type_ids`` where its model takes them. ``model.name_or_path=<folder>``
trains it like a hub model.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the architectures sdbert is tested on; DeBERTa-v2 has the v2 family's convolution layer, v3 has not
ARCHITECTURES = ("bert", "roberta", "deberta_v2", "deberta_v3", "electra", "modernbert")
GEOMETRY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
#: words of the tests' texts (tests.conftest.write_nli_dir) that get their own token
WORDS = ("a", "man", "two", "dogs", "child", "the", "woman", "some", "people", "cyclist", "runs", "in", "park",
         "sleeps", "on", "sofa", "plays", "guitar", "reads", "long", "book", "day", "someone", "nobody", "at", "all")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _wordpiece_vocab() -> dict[str, int]:
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = [*SPECIALS, *chars, *(f"##{c}" for c in chars), *WORDS]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def _bert_tokenizer() -> Any:
    from transformers import BertTokenizer

    return BertTokenizer(vocab=_wordpiece_vocab())


def _electra_tokenizer() -> Any:
    from transformers import ElectraTokenizer

    return ElectraTokenizer(vocab=_wordpiece_vocab())


def _byte_vocab(specials: tuple[str, ...]) -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    tokens = [*specials, *sorted(ByteLevel.alphabet())]
    return {t: i for i, t in enumerate(tokens)}


def _roberta_tokenizer() -> Any:
    from transformers import RobertaTokenizer

    return RobertaTokenizer(vocab=_byte_vocab(("<s>", "<pad>", "</s>", "<unk>", "<mask>")), merges=[])


def _deberta_tokenizer() -> Any:
    from transformers import DebertaV2Tokenizer

    pieces = [*SPECIALS, "▁", *string.ascii_letters, *string.digits, *string.punctuation, *(f"▁{w}" for w in WORDS)]
    vocab = [(p, 0.0 if p in SPECIALS else -float(i)) for i, p in enumerate(dict.fromkeys(pieces))]
    return DebertaV2Tokenizer(vocab=vocab, unk_id=SPECIALS.index("[UNK]"))


def _modernbert_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _byte_vocab(SPECIALS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    cls, sep = ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[cls, sep]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )


def _config(arch: str, tokenizer: Any, positions: int) -> Any:
    from transformers import BertConfig, DebertaV2Config, ElectraConfig, ModernBertConfig, RobertaConfig

    vocab = len(tokenizer)
    ids = {"pad_token_id": tokenizer.pad_token_id}
    if arch == "bert":
        return BertConfig(vocab_size=vocab, max_position_embeddings=positions, **ids, **GEOMETRY)
    if arch == "roberta":
        return RobertaConfig(vocab_size=vocab, max_position_embeddings=positions + 2, type_vocab_size=1,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **ids,
                             **GEOMETRY)
    if arch in ("deberta_v2", "deberta_v3"):
        conv = {"conv_kernel_size": 3, "conv_act": "gelu"} if arch == "deberta_v2" else {}
        return DebertaV2Config(vocab_size=vocab, max_position_embeddings=positions, type_vocab_size=0,
                               relative_attention=True, position_buckets=16, max_relative_positions=-1,
                               pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True,
                               position_biased_input=False, **conv, **ids, **GEOMETRY)
    if arch == "electra":
        return ElectraConfig(vocab_size=vocab, embedding_size=16, max_position_embeddings=positions, **ids, **GEOMETRY)
    if arch == "modernbert":
        special = {k: tokenizer.convert_tokens_to_ids(t) for k, t in
                   (("cls_token_id", "[CLS]"), ("sep_token_id", "[SEP]"), ("bos_token_id", "[CLS]"),
                    ("eos_token_id", "[SEP]"))}
        return ModernBertConfig(vocab_size=vocab, max_position_embeddings=positions, local_attention=16,
                                global_attn_every_n_layers=2, **special, **ids, **GEOMETRY)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


TOKENIZERS: dict[str, Callable[[], Any]] = {
    "bert": _bert_tokenizer, "roberta": _roberta_tokenizer, "deberta_v2": _deberta_tokenizer,
    "deberta_v3": _deberta_tokenizer, "electra": _electra_tokenizer, "modernbert": _modernbert_tokenizer,
}


def save_tiny_model(arch: str, folder: Path, positions: int = 64, seed: int = 0) -> Path:
    """A random-init base model of ``arch`` and its tokenizer, saved with ``save_pretrained`` into ``folder``."""
    import torch
    from transformers import AutoModel

    tokenizer = TOKENIZERS[arch]()
    torch.manual_seed(seed)
    AutoModel.from_config(_config(arch, tokenizer, positions)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
