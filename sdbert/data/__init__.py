"""The data layer: row selection and validation, the tokenised cache, batching, and the DataModule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TextClassificationDataModule"]

if TYPE_CHECKING:
    from sdbert.data.datamodule import TextClassificationDataModule


def __getattr__(name: str) -> Any:
    # Lazy: importing sdbert.data.selection or .cache should not import lightning.
    if name == "TextClassificationDataModule":
        from sdbert.data.datamodule import TextClassificationDataModule

        return TextClassificationDataModule
    raise AttributeError(f"module 'sdbert.data' has no attribute {name!r}")
