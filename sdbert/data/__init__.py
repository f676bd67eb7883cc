"""Data layer: pinned offline artifacts, raw sources (embedded/hub/local) and the datamodule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TextClassificationDataModule"]

if TYPE_CHECKING:
    from sdbert.data.datamodule import TextClassificationDataModule


def __getattr__(name: str) -> Any:
    # Lazy: `python -m sdbert.data.fetch` and the artifact helpers should not import lightning.
    if name == "TextClassificationDataModule":
        from sdbert.data.datamodule import TextClassificationDataModule

        return TextClassificationDataModule
    raise AttributeError(f"module 'sdbert.data' has no attribute {name!r}")
