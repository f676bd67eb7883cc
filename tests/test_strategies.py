"""The teachers against brute-force references that keep every snapshot (eq. 4, 6, 7)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from sdbert.averaging import CumulativeMean, ParameterRing, WindowMean
from sdbert.errors import ConfigError
from sdbert.strategies import (
    REPORTED,
    Description,
    ExponentialMovingAverage,
    SelfDistillationAveraged,
    SelfDistillationVoted,
    SelfEnsemble,
    Vanilla,
)
from tests.helpers import ToyClassifier


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _mean(snapshots: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack(ts).mean(0) for ts in zip(*snapshots, strict=True)]


def _run(strategy, steps: int = 9, seed: int = 0, dropout: float = 0.0):
    """Plain SGD loop calling the hooks in Lightning's order; yields (t, history θ_0..θ_t, x, strategy)."""
    torch.manual_seed(seed)
    model = ToyClassifier(dropout=dropout)
    strategy.setup(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    history: list[list[torch.Tensor]] = []
    data = torch.Generator().manual_seed(seed + 1)
    for t in range(steps):
        x = torch.randn(5, 6, generator=data)
        y = torch.randint(0, 3, (5,), generator=data)
        history.append(_params(model))  # θ_t
        yield t, history, x, model
        logits = model(x=x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        teacher = strategy.teacher_logits(model, {"x": x})
        if teacher is not None:
            loss = loss + strategy.distill_weight * torch.nn.functional.mse_loss(logits, teacher)
        opt.zero_grad()
        loss.backward()
        strategy.before_optimizer_step(model)
        opt.step()
        strategy.after_optimizer_step(model)


def _assert_teacher_logits(strategy, model, expected, x) -> None:
    """The strategy's teacher logits are those of ``model`` with the parameters ``expected``."""
    teacher_model = copy.deepcopy(model)
    with torch.no_grad():
        for p, v in zip(teacher_model.parameters(), expected, strict=True):
            p.copy_(v)
        torch.testing.assert_close(strategy.teacher_logits(model, {"x": x}), teacher_model(x=x))


@pytest.mark.parametrize("k", [1, 2, 3, "all"])
def test_sda_teacher_is_mean_of_k_previous_steps(k):
    strategy = SelfDistillationAveraged(teacher_size=k, distill_weight=1.0, teacher_dropout=False)
    checked = 0
    for t, history, x, model in _run(strategy):
        if t == 0:
            assert strategy.teacher_logits(model, {"x": x}) is None, "no distillation term at t = 0"
            continue
        window = history[:t] if k == "all" else history[max(0, t - k) : t]  # θ_{t-1} … θ_{t-K}, never θ_t
        expected = _mean(window)
        for got, want in zip(strategy.teacher_parameters(), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        # and the current θ_t is not part of it (the parameters did move)
        assert any(not torch.allclose(a, b) for a, b in zip(history[t], expected, strict=True))
        _assert_teacher_logits(strategy, model, expected, x)
        checked += 1
    assert checked == 8


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sdv_teacher_logits_are_mean_of_snapshot_logits(k):
    strategy = SelfDistillationVoted(teacher_size=k, distill_weight=1.0, teacher_dropout=False)
    for t, history, x, model in _run(strategy):
        got = strategy.teacher_logits(model, {"x": x})
        if t == 0:
            assert got is None
            continue
        names = [n for n, _ in model.named_parameters()]
        voters = history[max(0, t - k) : t]
        with torch.no_grad():
            logits = [functional_call(model, dict(zip(names, s, strict=True)), (), {"x": x}) for s in voters]
            expected = torch.stack(logits).mean(0)
        torch.testing.assert_close(got, expected)


def test_sda_k1_equals_sdv_k1():
    """The paper: SDA with K = 1 is the same as SDV with K = 1."""
    sda = SelfDistillationAveraged(teacher_size=1, teacher_dropout=False)
    sdv = SelfDistillationVoted(teacher_size=1, teacher_dropout=False)
    for (t, _, x, model_v), (_, _, _, model_a) in zip(_run(sdv, steps=5), _run(sda, steps=5), strict=True):
        if t:  # same seed and data: the two trajectories coincide step by step
            torch.testing.assert_close(sdv.teacher_logits(model_v, {"x": x}), sda.teacher_logits(model_a, {"x": x}))


def test_se_average_is_mean_over_all_steps():
    strategy = SelfEnsemble()
    steps = 7
    history = None
    for _, history, _, model in _run(strategy, steps=steps):
        pass
    final = _params(model)
    expected = _mean([*history[1:], final])  # θ_1 … θ_T
    for got, want in zip(strategy.average_model.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    x = torch.randn(4, 6)
    out = strategy.eval_logits(model, {"x": x})
    assert set(out) == {REPORTED, "student"}
    torch.testing.assert_close(out["student"], model(x=x))


def test_lambda_zero_has_no_teacher_term():
    strategy = SelfDistillationAveraged(teacher_size=2, distill_weight=0.0)
    for _t, _, x, model in _run(strategy, steps=4):
        assert strategy.teacher_logits(model, {"x": x}) is None


def test_teacher_dropout_switch():
    """With teacher_dropout the teacher's logits are noisy like the student's; without, deterministic."""
    on = SelfDistillationAveraged(teacher_size=1, teacher_dropout=True)
    off = SelfDistillationAveraged(teacher_size=1, teacher_dropout=False)
    for strategy, noisy in ((on, True), (off, False)):
        for t, _, x, model in _run(strategy, steps=3, dropout=0.5):
            if t == 2:
                a = strategy.teacher_logits(model, {"x": x})
                b = strategy.teacher_logits(model, {"x": x})
                assert (not torch.equal(a, b)) == noisy


def test_distill_terms_against_their_formulas():
    """logits: the paper's MSE of the logits; probabilities: KL(teacher ‖ student) = Σ p_t (log p_t − log p_s)."""
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(7, 3, generator=gen) * 3, torch.randn(7, 3, generator=gen) * 3
    mse = SelfDistillationAveraged(teacher_size=1).distill_term(student, teacher)
    torch.testing.assert_close(mse, ((student - teacher) ** 2).mean())
    kl = SelfDistillationVoted(teacher_size=1, distill_target="probabilities").distill_term(student, teacher)
    p_t = torch.softmax(teacher, -1)
    brute = sum(
        float(p_t[i, c]) * (float(torch.log_softmax(teacher, -1)[i, c]) - float(torch.log_softmax(student, -1)[i, c]))
        for i in range(7) for c in range(3)
    ) / 7
    assert float(kl) == pytest.approx(brute, rel=1e-5) and float(kl) > 0
    assert float(SelfDistillationAveraged(teacher_size=1, distill_target="probabilities").distill_term(
        teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "warmup,expected", [(0.0, [1, 1, 1, 1, 1]), (0.5, [0, 0.4, 0.8, 1, 1]), (1.0, [0, 0.2, 0.4, 0.6, 0.8])]
)
def test_distill_warmup_schedule(warmup, expected):
    strategy = SelfDistillationAveraged(teacher_size=1, distill_weight=0.5, distill_warmup=warmup)
    got = [strategy.weight_at(t, total_steps=5) for t in (0, 1, 2, 3, 4)]
    assert got == pytest.approx([0.5 * e for e in expected])
    # the departures are part of what describes the run (labels, W&B, metrics.json)
    assert strategy.describe().keys["distill_warmup"] == warmup
    assert strategy.describe().keys["distill_target"] == "logits"


def test_base_has_no_teacher():
    strategy = Vanilla()
    for _, _, x, model in _run(strategy, steps=3):
        assert strategy.teacher_logits(model, {"x": x}) is None
        assert set(strategy.eval_logits(model, {"x": x})) == {REPORTED}


@pytest.mark.parametrize("strategy_cls,k", [(SelfDistillationAveraged, 3), (SelfDistillationAveraged, "all"),
                                            (SelfDistillationVoted, 2), (SelfEnsemble, None),
                                            (ExponentialMovingAverage, None)])
def test_state_dict_round_trip(strategy_cls, k):
    kwargs = {"teacher_size": k, "teacher_dropout": False} if k is not None else {}
    a = strategy_cls(**kwargs)
    for _, _, _, model in _run(a, steps=5):
        pass
    state = copy.deepcopy(a.state_dict())
    b = strategy_cls(**kwargs)
    b.load_state_dict(state)  # before setup: kept until the tensors exist
    b.setup(model)
    x = torch.randn(3, 6)
    model.eval()
    for key, value in a.eval_logits(model, {"x": x}).items():
        torch.testing.assert_close(b.eval_logits(model, {"x": x})[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"teacher_size": 0}, "teacher_size must be >= 1"),
        ({"teacher_size": -3}, "teacher_size must be >= 1"),
        ({"teacher_size": 2.5}, "integer >= 1 or 'all'"),
        ({"teacher_size": "five"}, "integer >= 1 or 'all'"),
        ({"distill_weight": -1.0}, "distill_weight"),
        ({"distill_weight": "x"}, "distill_weight"),
        ({"distill_target": "soft"}, "distill_target must be logits"),
        ({"distill_warmup": 1.5}, r"distill_warmup must be a fraction .* in \[0, 1\]"),
        ({"distill_warmup": "half"}, "distill_warmup must be a fraction"),
    ],
)
def test_bad_teacher_settings_are_one_line_errors(kwargs, match):
    for cls in (SelfDistillationAveraged, SelfDistillationVoted):
        with pytest.raises(ConfigError, match=match) as info:
            cls(**kwargs)
        assert "\n" not in str(info.value)


def test_sdv_refuses_all():
    with pytest.raises(ConfigError, match="strategy=sda"):
        SelfDistillationVoted(teacher_size="all")


def test_window_mean_stays_exact_over_long_runs():
    like = [torch.zeros(50), torch.zeros(3, 4)]
    window = WindowMean(like, 4)
    ring = ParameterRing(like, 4)
    cum = CumulativeMean(like)
    out = [torch.empty(50), torch.empty(3, 4)]
    pushed = []
    for step in range(1000):
        params = [torch.randn(50) * 100 + step, torch.randn(3, 4)]
        pushed.append(params)
        window.push(params)
        ring.push(params)
        cum.push(params)
    window.write_mean(out)
    for got, want in zip(out, _mean(pushed[-4:]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(ring.snapshots(), pushed[-4:], strict=True))
    for got, want in zip(cum.mean, _mean(pushed), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------- EMA
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
def test_ema_teacher_is_the_moving_average_of_previous_steps(decay):
    strategy = ExponentialMovingAverage(decay=decay, teacher_dropout=False)
    checked = 0
    for t, history, x, model in _run(strategy):
        if t == 0:
            assert strategy.teacher_logits(model, {"x": x}) is None, "no distillation term at t = 0"
            continue
        expected = history[0]  # θ̄ = θ_0, then θ̄ ← decay·θ̄ + (1 − decay)·θ_s for s = 1 … t−1 (never θ_t)
        for snapshot in history[1:t]:
            expected = [decay * e + (1 - decay) * s for e, s in zip(expected, snapshot, strict=True)]
        for got, want in zip(strategy.teacher_parameters(), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        _assert_teacher_logits(strategy, model, expected, x)
        checked += 1
    assert checked == 8


def test_ema_with_decay_zero_is_sda_with_k1():
    ema, sda = ExponentialMovingAverage(decay=0.0, teacher_dropout=False), SelfDistillationAveraged(
        teacher_size=1, teacher_dropout=False)
    for (_, _, x, m1), (_, _, _, m2) in zip(_run(ema), _run(sda), strict=True):
        for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("decay", [1.0, -0.1, "high"])
def test_ema_refuses_a_bad_decay_in_one_line(decay):
    with pytest.raises(ConfigError, match=r"strategy.decay must be a number in \[0, 1\)") as info:
        ExponentialMovingAverage(decay=decay)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ describe()
def test_describe_reports_every_constructor_argument_that_defines_the_method():
    sdv = SelfDistillationVoted(teacher_size=5, distill_weight=0.5, batched_teachers=True).describe()
    assert sdv.keys == {"teacher_size": 5, "distill_weight": 0.5, "teacher_dropout": True, "distill_target": "logits",
                        "distill_warmup": 0.0}  # batched_teachers changes how it runs, not what: not a key
    assert sdv.label == "SDV (K=5, λ=0.5)" and sdv.models == (REPORTED, "teacher") and sdv.exportable == (REPORTED,)
    sda = SelfDistillationAveraged(teacher_size="all", teacher_dropout=False, distill_target="probabilities")
    assert sda.describe().label == "SDA (K=all, eval-mode teacher, KL of probabilities)"
    assert sda.describe().teacher_size == "all"
    se, base = SelfEnsemble().describe(), Vanilla().describe()
    assert (se.label, se.averaged, se.keys) == ("SE", True, {}) and (base.name, base.label) == ("base", "BASE")
    ema = ExponentialMovingAverage(decay=0.9).describe()
    assert ema.label == "EMA (decay=0.9)" and ema.teacher_size is None and ema.exportable == (REPORTED, "teacher")


def test_a_description_survives_metrics_json():
    import json

    for strategy in (Vanilla(), SelfEnsemble(), SelfDistillationAveraged(teacher_size="all", distill_weight=0.3),
                     SelfDistillationVoted(teacher_size=2), ExponentialMovingAverage(decay=0.5)):
        described = strategy.describe()
        back = Description.from_dict(json.loads(json.dumps(described.to_dict(), sort_keys=True)))
        assert back == described and back.label == described.label and back.method_key == described.method_key


def test_a_strategy_that_hides_an_argument_is_told_how_to_fix_it():
    class Hidden(Vanilla):
        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            self._scale = scale

    with pytest.raises(TypeError, match=r"keep the constructor argument 'scale' as self\.scale"):
        Hidden().describe()
    assert Hidden.name == "hidden"  # a subclass without a name gets its class name
