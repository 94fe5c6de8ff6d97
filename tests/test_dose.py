import pytest
import torch

from steerheal.chat import render_prompt
from steerheal.config import CalibrateConfig, ExtractConfig
from steerheal.dose import _token_kl, calibrate, kl_at, kl_stats, steered_token_kls
from steerheal.errors import CalibrationError
from steerheal.steering import extract

PROMPTS = ["hi", "What is the capital of France?", "tell me about dragons", "why is the sky blue"]


def test_token_kl_matches_a_hand_computed_value():
    p = torch.tensor([[[0.0, 0.0]]])  # uniform over 2
    q = torch.tensor([[[0.0, torch.log(torch.tensor(3.0))]]])  # (1/4, 3/4)
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    torch.testing.assert_close(_token_kl(p, q), expected.view(1, 1))


@pytest.fixture(scope="module")
def tiny_vector(tiny_llama):
    return extract(tiny_llama, "You love everyone.", "You hate everyone.", PROMPTS * 2,
                   ExtractConfig(layers="1,2"))


def test_kl_is_zero_at_zero_coefficient_and_grows_with_it(tiny_llama, tiny_vector):
    texts = [render_prompt(tiny_llama.tokenizer, p) for p in PROMPTS]
    cfg = CalibrateConfig(n_tokens=6, batch_size=3)
    assert float(steered_token_kls(tiny_llama, tiny_vector, 0.0, texts, cfg).abs().max()) < 1e-6
    small = kl_stats(tiny_llama, tiny_vector, 1.0, texts, cfg)
    big = kl_stats(tiny_llama, tiny_vector, 8.0, texts, cfg)
    assert 0 < small.p95 < big.p95
    assert small.n_tokens == len(PROMPTS) * 6  # the tiny model never emits a stop token here
    assert small.p50 <= small.p95 <= small.max


def test_calibration_hits_the_target_on_a_tiny_model(tiny_llama, tiny_vector):
    # Random tiny models are near-uniform at the output: their KL saturates around 0.03 nats.
    res = calibrate(tiny_llama, tiny_vector, PROMPTS, CalibrateConfig(target_kl=0.01, tol=0.001, n_tokens=8))
    assert res.converged and abs(res.stats.p95 - 0.01) < 0.001
    assert res.n_evals == len(res.trace) <= 12


def test_kl_at_a_fixed_coefficient_reproduces_the_calibrated_point(tiny_llama, tiny_vector):
    cfg = CalibrateConfig(target_kl=0.01, tol=0.001, n_tokens=8)
    res = calibrate(tiny_llama, tiny_vector, PROMPTS, cfg)
    fixed = kl_at(tiny_llama, tiny_vector, res.coeff, PROMPTS, cfg)  # what a fixed-alpha sweep point measures
    assert fixed.p95 == pytest.approx(res.stats.p95, rel=1e-5) and fixed.n_tokens == res.stats.n_tokens


def test_unreachable_target_raises_a_clear_error(tiny_llama, tiny_vector):
    with pytest.raises(CalibrationError, match="cannot bracket"):
        calibrate(tiny_llama, tiny_vector, PROMPTS, CalibrateConfig(target_kl=1e4, n_tokens=4))


def assert_monotone_consistent(res, target):
    below = [s.coeff for s in res.trace if s.p95 < target]
    above = [s.coeff for s in res.trace if s.p95 >= target]
    assert not below or not above or max(below) < min(above), [(s.coeff, s.p95) for s in res.trace]


@pytest.mark.parametrize("target", [0.5, 1.0])
def test_embedded_calibration_reaches_target(smollm, love_pair, contexts, heldout, target):
    v = extract(smollm, love_pair.pos, love_pair.neg, contexts[:64])
    res = calibrate(smollm, v, heldout, CalibrateConfig(target_kl=target))
    assert res.converged and abs(res.stats.p95 - target) < 0.05
    assert_monotone_consistent(res, target)
    assert res.n_evals <= 12
