"""Fast paths against the simple paths they replace: batched vs sequential SDV teachers, length-grouped
vs shuffled training batches. Nothing here asserts a time."""

from __future__ import annotations

import pytest
import torch

from sdbert.errors import ConfigError
from sdbert.strategies import SelfDistillationVoted
from tests.helpers import last_state, tiny_bert_classifier


def _inputs(batch: int = 6, length: int = 12, vocab: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, length // 2 :] = 0  # one padded row: the attention mask must batch too
    mask[min(1, batch - 1), length - 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _pair(k: int, teacher_dropout: bool) -> tuple[SelfDistillationVoted, SelfDistillationVoted]:
    return (
        SelfDistillationVoted(teacher_size=k, teacher_dropout=teacher_dropout, batched_teachers=True),
        SelfDistillationVoted(teacher_size=k, teacher_dropout=teacher_dropout, batched_teachers=False),
    )


def _perturb(model: torch.nn.Module, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_batched_teachers_equal_sequential_without_dropout(k):
    """Teacher logits (training, teacher_dropout=false) and the validation teacher: fp32 allclose, before
    and after the ring wraps (the batched path reads the snapshots in storage order)."""
    model = tiny_bert_classifier().train()
    batched, sequential = _pair(k, teacher_dropout=False)
    for s in (batched, sequential):
        s.setup(model)
    inputs = _inputs()
    for step in range(k + 2):
        _perturb(model, 0.05, seed=step)  # a new θ_t
        for s in (batched, sequential):
            s.before_optimizer_step(model)
        assert batched.ring.count == sequential.ring.count == min(step + 1, k)
        got = batched.teacher_logits(model, inputs)
        want = sequential.teacher_logits(model, inputs)
        assert got.shape == want.shape == (6, 3)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert model.training, "the teacher passes restore the model's mode"
        torch.testing.assert_close(
            batched.eval_logits(model, inputs)["teacher"], sequential.eval_logits(model, inputs)["teacher"],
            rtol=1e-5, atol=1e-6,
        )
    # every snapshot counted: the mean over the K distinct snapshots differs from any one of them
    if k > 1:
        per = sequential.snapshot_logits(model, inputs, training=False)
        assert not torch.allclose(per[0], per.mean(0))


@pytest.mark.parametrize("k", [2, 3])
def test_batched_dropout_draws_one_mask_per_snapshot(k):
    """With teacher dropout, K identical snapshots give K different outputs: each snapshot gets its own
    noise, as K sequential passes do (a vmap with randomness='same' would give K equal rows)."""
    model = tiny_bert_classifier().train()
    batched, _ = _pair(k, teacher_dropout=True)
    batched.setup(model)
    for _ in range(k):
        batched.before_optimizer_step(model)  # the same θ k times
    inputs = _inputs()
    per = batched.snapshot_logits(model, inputs, training=True)
    assert per.shape == (k, 6, 3)
    for i in range(k):
        for j in range(i):
            assert not torch.allclose(per[i], per[j])
    clean = batched.snapshot_logits(model, inputs, training=False)
    torch.testing.assert_close(clean[0], clean[-1])  # without dropout the identical snapshots agree


@pytest.mark.parametrize("k", [1, 2, 3])
def test_batched_dropout_teacher_has_the_sequential_distribution(k):
    """The same strategy with dropout: the voted teacher is a random variable (the dropout masks); batched
    and sequential passes draw it from different random streams, so compare distributions. One batch of
    400 copies of one example gives 400 independent draws (masks are per row). Their mean and variance
    agree; masks shared across snapshots would inflate the variance of the vote up to K times (the
    snapshots here are nearly equal)."""
    model = tiny_bert_classifier().train()
    batched, sequential = _pair(k, teacher_dropout=True)
    for s in (batched, sequential):
        s.setup(model)
    for step in range(k):
        _perturb(model, 0.002, seed=step)
        for s in (batched, sequential):
            s.before_optimizer_step(model)
    draws = 400
    one = _inputs(batch=1, length=10)
    inputs = {key: value.expand(draws, -1).contiguous() for key, value in one.items()}
    torch.manual_seed(1234)
    samples_b = batched.teacher_logits(model, inputs)
    torch.manual_seed(4321)
    samples_s = sequential.teacher_logits(model, inputs)
    mean_b, var_b = samples_b.mean(0), samples_b.var(0)
    mean_s, var_s = samples_s.mean(0), samples_s.var(0)
    assert var_b.sum() > 0 and var_s.sum() > 0
    se = ((var_b + var_s) / draws).sqrt()
    assert ((mean_b - mean_s).abs() <= 5 * se).all()
    ratio = float(var_b.sum() / var_s.sum())
    assert 0.75 < ratio < 1.33, f"variance ratio {ratio:.2f}"


def test_batched_teachers_switch():
    for value, want in (("auto", None), ("true", True), (False, False), (True, True)):
        assert SelfDistillationVoted(teacher_size=2, batched_teachers=value).batched_teachers is want
    with pytest.raises(ConfigError, match="batched_teachers must be auto, true or false"):
        SelfDistillationVoted(teacher_size=2, batched_teachers="sometimes")
    model = tiny_bert_classifier()
    for value, want in (("auto", False), (True, True)):  # auto: sequential on CPU, batched on CUDA (BENCHMARKS.md)
        strategy = SelfDistillationVoted(teacher_size=2, batched_teachers=value)
        strategy.setup(model)
        assert strategy.runs_batched is want


def test_batched_and_sequential_checkpoints_are_interchangeable():
    model = tiny_bert_classifier().train()
    batched, sequential = _pair(2, teacher_dropout=False)
    batched.setup(model)
    for step in range(3):
        _perturb(model, 0.05, seed=step)
        batched.before_optimizer_step(model)
    sequential.load_state_dict(batched.state_dict())
    sequential.setup(model)
    inputs = _inputs()
    torch.testing.assert_close(sequential.teacher_logits(model, inputs), batched.teacher_logits(model, inputs))


# -- length-grouped training batches --------------------------------------------------------------


def _lengths(n: int = 1000, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(5, 128, (n,), generator=gen)).tolist()


def test_grouped_batches_are_the_same_examples_each_epoch():
    """Grouped and plain orders: each a permutation of the same examples, epoch by epoch; only the order
    differs, and far fewer padding tokens are processed."""
    from sdbert.data.batches import EpochSeededSampler, LengthGroupedSampler, padding_ratio

    lengths = _lengths()
    grouped = LengthGroupedSampler(lengths, batch_size=16, data_seed=7)
    plain = EpochSeededSampler(len(lengths), data_seed=7)
    for epoch in range(3):
        grouped.set_epoch(epoch)
        plain.set_epoch(epoch)
        g, p = list(grouped), list(plain)
        assert len(g) == len(grouped) == len(lengths)
        assert sorted(g) == sorted(p) == list(range(len(lengths)))
        assert g != p
        assert padding_ratio(lengths, g, 16) < 1.1 < padding_ratio(lengths, p, 16)
        # the longest example leads the first batch
        assert lengths[g[0]] == max(lengths)


def test_grouped_order_depends_only_on_data_seed_and_epoch():
    from sdbert.data.batches import LengthGroupedSampler

    lengths = _lengths()

    def order(data_seed: int, epoch: int, torch_seed: int) -> list[int]:
        torch.manual_seed(torch_seed)  # the global generator (model seed) must not matter
        sampler = LengthGroupedSampler(lengths, batch_size=16, data_seed=data_seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 0, 0) == order(1, 0, 99)
    assert order(1, 0, 0) != order(1, 1, 0)
    assert order(1, 0, 0) != order(2, 0, 0)


def test_group_by_length_option_reaches_the_train_loader(make_cfg):
    from sdbert.config import instantiate
    from sdbert.data.batches import EpochSeededSampler, LengthGroupedSampler, token_lengths

    def loader(*overrides: str):
        cfg = make_cfg(*overrides)
        dm = instantiate(cfg.dataset, tokenizer=cfg.model.name_or_path, data_seed=3, cache_dir=cfg.paths.cache_dir)
        dm.setup("fit")
        return dm, dm.train_dataloader()

    assert isinstance(loader()[1].sampler, EpochSeededSampler)  # off by default
    dm, grouped = loader("dataset.group_by_length=true")
    assert isinstance(grouped.sampler, LengthGroupedSampler)
    assert grouped.sampler.lengths == [len(ids) for ids in dm.train_dataset["input_ids"]] == token_lengths(
        dm.train_dataset
    )
    assert sum(len(batch["labels"]) for batch in grouped) == len(dm.train_dataset)


# -- the end-to-end benchmark -----------------------------------------------------------------------


@pytest.mark.parametrize(("loop", "strategy"), [("plain", "base"), ("hf", "base"), ("sdbert", "sdv5_batched")])
def test_benchmark_loops_run_the_requested_steps(loop, strategy, tmp_path):
    """Each loop trains the tiny random BERT for warmup + steps optimizer steps on the same batches and
    reports consistent counts (never a time)."""
    pytest.importorskip("accelerate")
    from sdbert.bench.e2e import Job, parse_args, run_job, table

    args = parse_args(["--geometry", "tiny", "--data", "synthetic", "--seq", "16", "--batch", "4",
                       "--steps", "2", "--warmup", "1", "--device", "cpu"])
    result = run_job(args, Job(loop, strategy), seq=16)
    assert result.steps == 2 and result.seq == 16
    assert result.padded_over_real == 1.0  # synthetic sequences are full length
    assert result.real_tokens_per_s == pytest.approx(result.samples_per_s * 16, rel=0.01)
    if loop == "sdbert":
        assert result.extra == {"optimizer_steps": 3, "batched_teachers": True}
    assert f"| 16 | {loop} | {strategy} |" in table([result])


def test_benchmark_table_ratios_use_the_shuffled_base_jobs():
    """× plain, × hf and × base divide by the shuffled eager BASE jobs of the same seq, never by a grouped or
    a compiled one (listed first here, so a reference that took the first BASE row would be caught)."""
    from sdbert.bench.e2e import default_jobs
    from sdbert.bench.tables import Result, table

    def result(loop, strategy="base", group=False, samples=10.0, ms=100.0, compiled=False):
        job = {"loop": loop, "strategy": strategy, "group_by_length": group, "compile": compiled}
        return Result(job, 128, 10, samples, samples * 30, ms, 1.0, 1.0, 100.0, 1.5)

    jobs = default_jobs(["base", "sda5"], ["plain", "hf", "sdbert"], group=True, compile=True)
    assert [(j.loop, j.strategy, j.group_by_length, j.compile) for j in jobs] == [
        ("plain", "base", False, False), ("hf", "base", False, False), ("sdbert", "base", False, False),
        ("sdbert", "sda5", False, False), ("sdbert", "base", True, False), ("hf", "base", True, False),
        ("plain", "base", False, True), ("sdbert", "base", False, True)]
    rows = table([result("plain", samples=16.0, compiled=True), result("sdbert", samples=18.0, ms=50.0, compiled=True),
                  result("plain", samples=8.0), result("hf", samples=10.0), result("sdbert", samples=9.0, ms=200.0),
                  result("sdbert", "sda5", samples=6.0, ms=300.0), result("sdbert", group=True, samples=13.0, ms=140.0),
                  result("hf", group=True, samples=12.0)]).splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    ratios = [(c[1], c[2], c[6], c[7], c[8]) for c in cells]
    assert ratios == [
        ("plain", "base +compile", "2.00", "1.60", "–"), ("sdbert", "base +compile", "2.25", "1.80", "0.25"),
        ("plain", "base", "1.00", "0.80", "–"), ("hf", "base", "1.25", "1.00", "–"),
        ("sdbert", "base", "1.12", "0.90", "1.00"), ("sdbert", "sda5", "0.75", "0.60", "1.50"),
        ("sdbert", "base +group_by_length", "1.62", "1.30", "0.70"),
        ("hf", "base +group_by_length", "1.50", "1.20", "–"),
    ]


def test_benchmark_token_counts_follow_the_sampler(make_cfg):
    """Real / processed tokens of the timed batches are those of the training loader's epoch-0 batches."""
    from sdbert.bench.e2e import Data, parse_args

    cfg = make_cfg("dataset.max_length=512")  # bbc_news articles: lengths vary below 512
    args = parse_args(["--steps", "2", "--warmup", "1", "--batch", str(cfg.dataset.batch_size)])
    data = Data(cfg, args, seq=cfg.dataset.max_length)
    batches = list(data.loader)
    real = sum(int(b["attention_mask"].sum()) for b in batches[1:3])
    processed = sum(b["attention_mask"].numel() for b in batches[1:3])
    assert data.tokens(1, 3) == (real, processed)
    assert processed > real


# ----------------------------------------------------------------------------------------- torch.compile


def _final_weights(run_dir) -> dict[str, torch.Tensor]:
    return {k: v for k, v in last_state(run_dir).items() if k.startswith("model.")}


@pytest.mark.long
def test_compiled_runs_train_the_same_model(tmp_path):
    """``compile=true`` (SDV, K = 2: the teacher passes go through ``functional_call`` on the compiled
    student) trains the eager run's model, with dropout on: the same masks (eager's generator, per-batch
    seeds), other kernels. Equal up to float rounding, yet not bit for bit (which shows the compiled
    kernels ran). Bit-for-bit repeats need the same compiled kernels, so compiled runs (and resumes)
    repeat each other up to rounding too."""
    from tests.conftest import train_run

    def run(name: str, *overrides: str) -> dict[str, torch.Tensor]:
        return _final_weights(train_run(tmp_path / name, ["strategy=sdv", "teacher_size=2", *overrides]))

    eager, compiled = run("eager"), run("compiled", "compile=true")
    assert eager.keys() == compiled.keys()  # compiled in place: the checkpoint's names are the eager run's
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(compiled[k], eager[k]) for k in eager)


def test_compile_must_be_a_bool(make_cfg):
    from sdbert.checks import check_config

    with pytest.raises(ConfigError, match="compile must be true or false"):
        check_config(make_cfg("compile=yes"), overrides=[])
