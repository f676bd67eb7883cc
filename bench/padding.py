"""Processed / real tokens of the training batches, shuffled (the paper's order) vs length-grouped.

Per-batch padding makes every batch as long as its longest example; ``dataset.group_by_length=true``
(Hugging Face's megabatch sort) puts examples of similar length together. Reads the training set
through the project's data module (tokenised cache), so the lengths are exactly what training sees.

    python bench/padding.py                                            # SNLI, the main job's 1,500 pairs
    python bench/padding.py experiment=paper dataset=imdb dataset.batch_size=16    # IMDb head-512
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

import sdbert  # noqa: F401  (resolvers)
from sdbert import factory
from sdbert.data.batches import EpochSeededSampler, LengthGroupedSampler, padding_ratio, token_lengths

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    cfg.paths.output_dir = tempfile.mkdtemp()
    dm = factory.build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    lengths = token_lengths(dm.train_dataset)
    batch = int(cfg.dataset.batch_size)
    row = {"dataset": cfg.dataset.name, "max_length": int(cfg.dataset.max_length), "batch_size": batch,
           "examples": len(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1)}
    for name, sampler in (("shuffled", EpochSeededSampler(len(lengths), cfg.data_seed)),
                          ("grouped", LengthGroupedSampler(lengths, batch, cfg.data_seed))):
        ratios = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            ratios.append(round(padding_ratio(lengths, list(sampler), batch), 3))
        row[name] = ratios
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
