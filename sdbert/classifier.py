"""The classifier of eq. (1): the encoder's own Hugging Face sequence-classification model.

``AutoModelForSequenceClassification`` builds it for any architecture; for BERT that is eq. (1) itself
(dropout + linear layer on the pooled [CLS], the linear layer initialised N(0, initializer_range)).
:class:`SequenceClassifier` calls it like the rest of sdbert does (``model(**inputs)`` → logits) and
says which parameters are the head from the model itself (``base_model_prefix``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from sdbert.errors import ConfigError
from sdbert.sources.models import hub_error, quiet_transformers, resolve_pretrained

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: the config keys ``model.dropout`` sets, per ``model_type``: every dropout of the encoder and of its
#: classification head, so one rate (the paper's 0.1) holds everywhere
DROPOUT_KEYS: dict[str, tuple[str, ...]] = {
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
    "roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
    "electra": ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
    "mpnet": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "deberta-v2": ("hidden_dropout_prob", "attention_probs_dropout_prob", "pooler_dropout", "cls_dropout"),
    "modernbert": ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout"),
}
#: where the weights of checkpoints written by sdbert's earlier classifier (``encoder`` + ``classifier``
#: on the pooled [CLS]) live in the Hugging Face model of the same architecture, by ``model_type``
LEGACY_PARAMETERS: dict[str, dict[str, str]] = {"bert": {"encoder.": "{base}.", "classifier.": "classifier."}}


def set_dropout(config: Any, dropout: float | None) -> None:
    """Set every dropout of ``config``'s model to ``dropout`` (:data:`DROPOUT_KEYS`); None keeps the config's."""
    if dropout is None:
        return
    keys = DROPOUT_KEYS.get(config.model_type)
    if keys is None:
        raise ConfigError(
            f"model.dropout: sdbert does not know the dropout keys of model type '{config.model_type}' (known: "
            f"{', '.join(sorted(DROPOUT_KEYS))}); set model.dropout=null to keep the model's own config"
        )
    for key in keys:
        setattr(config, key, float(dropout))


class SequenceClassifier(nn.Module):
    """A ``transformers`` sequence-classification model (``hf``) returning its logits: softmax(W h), eq. (1).

    The head is everything outside the base model (``hf.base_model_prefix``): BERT's linear layer,
    RoBERTa's and ELECTRA's dense + output layers, DeBERTa's context pooler + linear layer, ModernBERT's
    prediction head + linear layer. Checkpoints of sdbert's earlier classifier load through
    :data:`LEGACY_PARAMETERS`.
    """

    def __init__(self, hf: PreTrainedModel) -> None:
        super().__init__()
        self.hf = hf
        # torch declares register_load_state_dict_pre_hook without annotations
        self.register_load_state_dict_pre_hook(_legacy_names)  # type: ignore[no-untyped-call]

    def forward(self, **inputs: Tensor) -> Tensor:
        """Logits of shape (batch, num_labels)."""
        return cast(Tensor, self.hf(**inputs, return_dict=True).logits)

    def is_head(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to the classification head (trained with the larger learning rate)."""
        return not name.startswith(f"hf.{self.hf.base_model_prefix}.")


def _legacy_names(module: SequenceClassifier, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Rename, in place, the earlier classifier's parameter names in ``state_dict`` to the Hugging Face model's."""
    renames = LEGACY_PARAMETERS.get(module.hf.config.model_type, {})
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "hf.")]:
        rest = key[len(prefix) :]
        for old, new in renames.items():
            if rest.startswith(old):
                target = new.format(base=module.hf.base_model_prefix)
                state_dict[f"{prefix}hf.{target}{rest[len(old):]}"] = state_dict.pop(key)
                break


def draw_new_head(hf: nn.Module, missing: set[str]) -> None:
    """Initialise the linear layers of ``hf`` whose weights the checkpoint lacked (``missing`` parameter
    names), in module order, each as ``nn.Linear`` then N(0, initializer_range) with a zero bias: the draws
    of eq. (1)'s softmax layer, so the same seed gives the same new head whatever ``transformers`` drew
    while loading (call it with the random state of before the load)."""
    std = float(getattr(hf.config, "initializer_range", 0.02))
    for name, module in hf.named_modules():
        if isinstance(module, nn.Linear) and f"{name}.weight" in missing:
            fresh = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            nn.init.normal_(fresh.weight, std=std)
            with torch.no_grad():
                module.weight.copy_(fresh.weight)
                if module.bias is not None:
                    module.bias.zero_()


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
    dropout: float | None = 0.1,
    random_init: dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    label: str | None = None,
    pooling: str = "pooler",
) -> SequenceClassifier:
    """Load (or, with ``random_init``, build from a changed config) the model's sequence-classification model.

    ``dropout``: every dropout of encoder and head (:func:`set_dropout`). ``random_init`` overrides config
    fields and skips the pretrained weights: the tiny test and benchmark models. ``attn_implementation``:
    None takes the architecture's default (SDPA where it has one). ``gradient_checkpointing`` recomputes
    each layer's activations in the backward pass instead of keeping them (less memory, about one more
    forward pass of time). ``label`` is the name runs record the model under
    (:func:`sdbert.checks.recorded_model`); it does not affect the model. ``pooling``: runs configured
    before the classifier was the model's own carry ``pooler``, which is what this builds.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if pooling != "pooler":
        raise ConfigError(
            f"model.pooling={pooling} is not available: the classifier is the model's own sequence-classification "
            "head (BERT: the pooled [CLS]); remove model.pooling"
        )
    quiet_transformers()
    resolved = resolve_pretrained(name_or_path)
    try:
        config = AutoConfig.from_pretrained(resolved, num_labels=num_labels)
    except (OSError, ValueError) as err:
        raise hub_error(name_or_path, err) from err
    set_dropout(config, dropout)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        if random_init:
            config.update(dict(random_init))
            # transformers declares from_config without annotations
            hf = AutoModelForSequenceClassification.from_config(config, **kwargs)  # type: ignore[no-untyped-call]
        else:
            state = torch.get_rng_state()
            hf, info = AutoModelForSequenceClassification.from_pretrained(
                resolved, config=config, output_loading_info=True, **kwargs
            )
            torch.set_rng_state(state)
            draw_new_head(hf, set(info["missing_keys"]))
    except ValueError as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model '{name_or_path}': no sequence-classification model for it ({reason})") from None
    except OSError as err:
        raise hub_error(name_or_path, err) from err
    hf.float()
    if gradient_checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # from_pretrained hands the model back in eval mode; Lightning keeps modules' modes, so without this
    # its dropout (0.1 in the recipe) would silently stay off during training.
    return SequenceClassifier(hf).train()
