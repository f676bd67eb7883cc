"""The paper's optimisation recipe (§4.2, official BERT otherwise), one place for every training loop
(the LightningModule, the benchmark's plain and Hugging Face loops): AdamW over four parameter groups
(encoder / softmax layer × with / without weight decay, decay on matrices only), two learning rates,
and a linear warm-up then linear decay (or flat) over the run's optimizer steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from sdbert.errors import ConfigError


class HasHead(Protocol):
    """A classifier that says which of its parameters are the softmax layer (`sdbert.classifier`)."""

    def named_parameters(self) -> Any: ...

    def is_head(self, name: str) -> bool: ...


def param_groups(model: HasHead, optim: Mapping[str, Any]) -> list[dict[str, Any]]:
    """AdamW's groups, named ``encoder``, ``encoder_no_decay``, ``head``, ``head_no_decay`` (the learning-rate
    monitor logs them under these names): ``head_lr`` for the head, ``encoder_lr`` for the rest,
    ``weight_decay`` on matrices only (not on biases and LayerNorm)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = "head" if model.is_head(name) else "encoder"
            groups.setdefault((part, p.ndim >= 2), []).append(p)
    return [
        {
            "params": params,
            "lr": optim["head_lr"] if part == "head" else optim["encoder_lr"],
            "weight_decay": optim["weight_decay"] if decay else 0.0,
            "name": part if decay else f"{part}_no_decay",
        }
        for (part, decay), params in sorted(groups.items())
    ]


def optimizer_and_schedule(model: HasHead, optim: Mapping[str, Any], fused: bool = True,
                           total: int | None = None) -> tuple[torch.optim.AdamW, LinearSchedule]:
    """AdamW over :func:`param_groups` (``fused`` where ``optim.fused`` allows it) and the learning-rate
    factor of :class:`LinearSchedule` (for ``torch.optim.lr_scheduler.LambdaLR``) over ``total`` steps
    (None: set ``schedule.total`` once the run knows it)."""
    optimizer = torch.optim.AdamW(
        param_groups(model, optim),
        lr=optim["encoder_lr"],
        betas=tuple(optim.get("betas", (0.9, 0.999))),
        eps=optim.get("adam_eps", 1e-6),
        fused=(bool(optim.get("fused", True)) and fused) or None,
    )
    schedule = LinearSchedule(optim.get("warmup_proportion", 0.1), optim.get("schedule", "linear"))
    schedule.total = total
    return optimizer, schedule


class LinearSchedule:
    """The learning-rate factor at optimizer step t: linear warm-up over ``warmup_proportion`` of the
    ``total`` steps, then linear decay to 0 (``linear``) or flat (``constant``; isolates the teacher
    dynamics in probes). The formulas of transformers' ``get_linear_schedule_with_warmup`` /
    ``get_constant_schedule_with_warmup``.

    ``total`` is set when training starts (``SelfDistillationModule.on_train_start``); until then the
    factor is 0. Its attributes are plain values, so ``LambdaLR`` saves and restores them in checkpoints.
    """

    def __init__(self, warmup_proportion: float, kind: str = "linear") -> None:
        if kind not in ("linear", "constant"):
            raise ConfigError(f"optim.schedule must be 'linear' or 'constant' (got {kind!r})")
        self.warmup_proportion = float(warmup_proportion)
        self.kind = kind
        self.total: int | None = None

    def __call__(self, step: int) -> float:
        if self.total is None:
            return 0.0
        warmup = round(self.warmup_proportion * self.total)
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if self.kind == "constant":
            return 1.0
        return max(0.0, float(self.total - step) / float(max(1, self.total - warmup)))
