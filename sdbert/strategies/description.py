"""What defines a training method: :class:`Description`, returned by ``TeacherStrategy.describe()``.

It is written whole into a run's ``metrics.json`` (key ``strategy``), and everything after training
reads it from there: the report's rows and labels, the ensembles, W&B names, the run folder's tag, the
resume identity check and which models predict/export can use. None of them knows a strategy's name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: the key under which a run's ``metrics.json`` holds its :class:`Description`
SUMMARY_KEY = "strategy"


def plain_value(value: Any) -> Any:
    """A value as JSON keeps it (so a description read back from ``metrics.json`` equals the original)."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class Description:
    """One method, completely.

    ``keys`` holds every constructor argument that changes what is trained, with its value; ``defaults``
    their default values (the paper's where the strategy follows it). Two runs are the same method exactly
    when ``name`` and ``keys`` are equal. ``label`` is for people: the title, K where the method has one,
    then ``qualifiers`` (the keys that differ from their defaults, in words).
    """

    #: short, stable id (``sda``): the strategy class's ``name``
    name: str
    #: how tables name the method (``SDA``)
    title: str
    keys: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: the label's parts besides K (``λ=0.5``, ``eval-mode teacher``)
    qualifiers: tuple[str, ...] = ()
    #: the models evaluated (``reported`` first); their metrics are ``val/acc``, ``val/<model>/acc``
    models: tuple[str, ...] = ("reported",)
    #: the models that are one set of weights (can be exported; the others are e.g. a vote of logits)
    exportable: tuple[str, ...] = ("reported",)
    #: whether the reported model's weights are a parameter average (not the trained student's)
    averaged: bool = False

    @property
    def teacher_size(self) -> Any:
        """K (an int, or ``all`` for T−1) where the method has one, else None."""
        return self.keys.get("teacher_size")

    @property
    def label(self) -> str:
        """``BASE``, ``SDA (K=2)``, ``SDA (K=all, λ=0.5, eval-mode teacher)``."""
        return self.label_with(self.teacher_size)

    def label_with(self, teacher_size: Any) -> str:
        """The label with K shown as ``teacher_size`` (None: without K)."""
        parts = ([] if teacher_size is None else [f"K={teacher_size}"]) + list(self.qualifiers)
        return f"{self.title} ({', '.join(parts)})" if parts else self.title

    @property
    def changed(self) -> tuple[str, ...]:
        """The keys (K aside) whose values differ from their defaults."""
        return tuple(k for k, v in self.keys.items()
                     if k != "teacher_size" and (k not in self.defaults or self.defaults[k] != v))

    @property
    def method_key(self) -> str:
        """Equal for runs of the same method (``name`` and ``keys``)."""
        return json.dumps({"name": self.name, "keys": dict(self.keys)}, sort_keys=True, default=str)

    def sort_key(self) -> tuple[Any, ...]:
        """Defaults first, then each key by name (``metrics.json`` keeps keys sorted): (differs from default, value)."""
        def one(key: str) -> tuple[Any, ...]:
            value = self.keys[key]
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            return (key in self.changed, 0 if number else 1, float(value) if number else 0.0, str(value))

        return tuple(one(k) for k in sorted(self.keys) if k != "teacher_size")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``metrics.json``'s ``strategy``); :meth:`from_dict` reads it back."""
        out = plain_value(asdict(self))
        out["label"] = self.label
        out["teacher_size"] = self.teacher_size
        return dict(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Description:
        """The description ``to_dict`` wrote (the derived ``label`` and ``teacher_size`` are recomputed)."""
        return cls(
            name=str(data["name"]),
            title=str(data["title"]),
            keys=dict(data.get("keys") or {}),
            defaults=dict(data.get("defaults") or {}),
            qualifiers=tuple(data.get("qualifiers") or ()),
            models=tuple(data.get("models") or ("reported",)),
            exportable=tuple(data.get("exportable") or ()),
            averaged=bool(data.get("averaged", False)),
        )

    @staticmethod
    def is_one(data: Any) -> bool:
        """Whether ``data`` (a ``metrics.json`` value) is a description's JSON form."""
        return isinstance(data, Mapping) and {"name", "title", "keys"} <= set(data)

    def plain(self) -> Description:
        """This description with its values as JSON keeps them."""
        return Description.from_dict(self.to_dict())
