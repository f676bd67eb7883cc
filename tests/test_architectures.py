"""Every supported architecture (tiny, random-init, offline): the classifier is the model's own sequence-
classification model, trains SDA and SDV, resumes bit for bit mid-epoch, exports, and the exported folder
gives the run's test probabilities through ``pipeline("text-classification")``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdbert.classifier import DROPOUT_KEYS, build_classifier
from sdbert.errors import ConfigError
from tests.conftest import train_run, write_nli_dir
from tests.helpers import last_state
from tests.tiny_models import ARCHITECTURES, save_tiny_model

#: the parameters outside the base model of each architecture's Hugging Face classification model
HEADS = {
    "bert": {"classifier.weight", "classifier.bias"},
    "roberta": {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                "classifier.out_proj.bias"},
    "deberta_v2": {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"},
    "electra": {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                "classifier.out_proj.bias"},
    "modernbert": {"head.dense.weight", "head.norm.weight", "classifier.weight", "classifier.bias"},
}
HEADS["deberta_v3"] = HEADS["deberta_v2"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory):
    made: dict[str, Path] = {}

    def _folder(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny_model(arch, tmp_path_factory.mktemp(arch))
        return made[arch]

    return _folder


def _inputs(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return dict(tok(["A man runs in a park.", "Two dogs sleep on a sofa on day 4."], ["Someone runs.", "Nobody."],
                    padding=True, return_tensors="pt"))


def test_bert_classifier_is_eq1_and_reads_the_earlier_classifiers_checkpoints(tiny_folder):
    """The earlier classifier (BertModel → pooled [CLS] → dropout → linear, parameters ``encoder.*`` and
    ``classifier.*``): its weights, loaded by name mapping, give the same logits in the new model."""
    from transformers import BertModel

    folder = tiny_folder("bert")
    torch.manual_seed(3)
    encoder = BertModel.from_pretrained(folder).eval()
    linear = nn.Linear(encoder.config.hidden_size, 3)
    earlier = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
               **{f"classifier.{k}": v for k, v in linear.state_dict().items()}}
    inputs = _inputs(folder)
    with torch.no_grad():
        expected = F.linear(encoder(**inputs).pooler_output, linear.weight, linear.bias)
    model = build_classifier(str(folder), num_labels=3).eval()
    assert not torch.allclose(model(**inputs), expected)  # not by accident: another head before loading
    model.load_state_dict(earlier)
    torch.testing.assert_close(model(**inputs), expected, rtol=0, atol=1e-6)
    holder = nn.Module()  # inside a module, as the LightningModule's checkpoints hold it (``model.encoder.*``)
    holder.model = build_classifier(str(folder), num_labels=3).eval()
    holder.load_state_dict({f"model.{k}": v for k, v in earlier.items()})
    torch.testing.assert_close(holder.model(**inputs), expected, rtol=0, atol=1e-6)
    # the new head is drawn N(0, initializer_range) with a zero bias, as eq. (1)'s was
    fresh = build_classifier(str(folder), num_labels=200).hf.classifier
    assert torch.count_nonzero(fresh.bias) == 0
    assert abs(fresh.weight.std().item() - encoder.config.initializer_range) < 0.003


def test_a_new_head_is_drawn_as_eq1s_was_and_a_saved_head_is_kept(tiny_folder, tmp_path):
    """From pretrained weights the new softmax layer takes the draws of the earlier classifier (``nn.Linear``,
    then N(0, initializer_range), zero bias) from the random state of before loading, so a seed gives the
    committed runs' head and leaves the random state where it did; a folder that has a head keeps it."""
    folder = tiny_folder("bert")
    torch.manual_seed(11)
    model = build_classifier(str(folder), num_labels=3)
    after = torch.get_rng_state()
    torch.manual_seed(11)
    linear = nn.Linear(model.hf.config.hidden_size, 3)
    nn.init.normal_(linear.weight, std=model.hf.config.initializer_range)
    assert torch.equal(model.hf.classifier.weight, linear.weight) and torch.count_nonzero(model.hf.classifier.bias) == 0
    assert torch.equal(after, torch.get_rng_state())
    with torch.no_grad():
        model.hf.classifier.weight.fill_(0.5)
    model.hf.save_pretrained(tmp_path / "trained")
    reloaded = build_classifier(str(tmp_path / "trained"), num_labels=3)
    assert torch.equal(reloaded.hf.classifier.weight, torch.full_like(linear.weight, 0.5))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_learning_rate_goes_to_everything_outside_the_base_model(tiny_folder, arch):
    from sdbert.module import SelfDistillationModule
    from sdbert.strategies import Vanilla

    model = build_classifier(str(tiny_folder(arch)), num_labels=3)
    assert {n.removeprefix("hf.") for n, _ in model.named_parameters() if model.is_head(n)} == HEADS[arch]
    optim = {"encoder_lr": 1e-5, "head_lr": 1e-3, "weight_decay": 0.01, "warmup_proportion": 0.1}
    module = SelfDistillationModule(model, Vanilla(), optim, label_names=["a", "b", "c"])
    groups = module.configure_optimizers()["optimizer"].param_groups
    head = {id(p) for g in groups if g["initial_lr"] == 1e-3 for p in g["params"]}
    assert head == {id(p) for n, p in model.named_parameters() if n.removeprefix("hf.") in HEADS[arch]}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_dropout_sets_every_dropout_of_encoder_and_head(tiny_folder, arch):
    model = build_classifier(str(tiny_folder(arch)), num_labels=3, dropout=0.25)
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.25}
    assert all(getattr(model.hf.config, key) == 0.25 for key in DROPOUT_KEYS[model.hf.config.model_type])
    kept = build_classifier(str(tiny_folder(arch)), num_labels=3, dropout=None)
    assert {m.p for m in kept.modules() if isinstance(m, nn.Dropout)} != {0.25}


def test_unknown_dropout_keys_and_the_raw_cls_pooling_are_refused_in_one_line(tmp_path):
    from transformers import FunnelConfig

    FunnelConfig(d_model=32, n_head=2, d_head=16, d_inner=64, block_sizes=[1, 1], vocab_size=50).save_pretrained(
        tmp_path / "funnel")
    with pytest.raises(ConfigError, match=r"model type 'funnel'.*model\.dropout=null") as info:
        build_classifier(str(tmp_path / "funnel"), num_labels=2, random_init={"d_model": 32})
    assert "\n" not in str(info.value)
    assert build_classifier(str(tmp_path / "funnel"), num_labels=2, dropout=None, random_init={"d_model": 32})
    with pytest.raises(ConfigError, match=r"model\.pooling=cls is not available"):
        build_classifier(str(tmp_path / "funnel"), num_labels=2, pooling="cls")


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_folder, arch):
    folder = tiny_folder(arch)
    inputs, labels = _inputs(folder), torch.tensor([0, 2])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_classifier(str(folder), num_labels=3, gradient_checkpointing=checkpointing)
        assert model.hf.is_gradient_checkpointing == checkpointing
        torch.manual_seed(1)  # the same dropout masks: recomputation replays the saved RNG state
        F.cross_entropy(model(**inputs), labels).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


# -- whole runs ---------------------------------------------------------------------------------------
def _run_overrides(folder: Path, data: Path, strategy: str) -> list[str]:
    return [
        f"model.name_or_path={folder}", f"model.label=tiny {folder.name}", "dataset=snli", f"dataset.source={data}",
        "dataset.train_per_class=4", "dataset.val_size=6", "dataset.eval_size=12", "dataset.max_length=24",
        f"strategy={strategy}", "teacher_size=2", "trainer.enable_progress_bar=false", "test_ckpt=last",
    ]


def _test_pairs(data: Path, rows: torch.Tensor) -> list[dict[str, str]]:
    lines = (data / "test.jsonl").read_text().splitlines()
    records = [json.loads(lines[int(r)]) for r in rows]
    return [{"text": r["premise"], "text_pair": r["hypothesis"]} for r in records]


def _pipeline_probs(folder: Path, pairs: list[dict[str, str]]) -> torch.Tensor:
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(folder), device="cpu")
    ids = clf.model.config.label2id
    probs = torch.zeros(len(pairs), len(ids))
    for i, scores in enumerate(clf(pairs, top_k=None, truncation=True, batch_size=4)):
        for s in scores:
            probs[i, ids[s["label"]]] = s["score"]
    return probs


@pytest.mark.parametrize("strategy", ["sda", "sdv"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_trains_resumes_exactly_and_exports_to_pipeline(tiny_folder, tmp_path, arch, strategy):
    """12 NLI pairs, batch 4: 3 optimizer steps. The run keeps a checkpoint after every step; a second run
    from the one after step 2 (mid-epoch: K=2 teacher state, schedule, data position) ends with the same
    weights and test probabilities. The exported student, loaded by ``pipeline``, gives those probabilities."""
    from sdbert.export import export

    data = write_nli_dir(tmp_path / "nli", n_train=24, n_test=8)
    overrides = _run_overrides(tiny_folder(arch), data, strategy)
    steps = ["+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
             f"+callbacks.steps.dirpath={tmp_path / 'steps'}", "+callbacks.steps.every_n_train_steps=1",
             "+callbacks.steps.save_top_k=-1", "+callbacks.steps.filename='s{step}'"]
    full = train_run(tmp_path / "full", [*overrides, *steps])
    assert json.loads((full / "metrics.json").read_text())["optimizer_steps"] == 3
    resumed = train_run(tmp_path / "resumed", [*overrides, f"ckpt_path='{tmp_path / 'steps' / 'sstep=2.ckpt'}'"])
    a, b = last_state(full), last_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved, again = (torch.load(d / "predictions" / "test.pt", weights_only=True) for d in (full, resumed))
    assert torch.equal(saved["probs"], again["probs"])

    folder = export(resumed, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    probs = _pipeline_probs(folder, _test_pairs(data, saved["rows"]))
    assert (probs - saved["probs"]).abs().max().item() <= 1e-5
