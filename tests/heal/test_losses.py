import math

import pytest
import torch

from steerheal.heal.losses import aggregate, barrier, lora_sigma_max, round_lambda, token_kl


def spike_kl(n=60, spike=4, high=3.0, low=0.02):
    kl = torch.full((n,), low)
    kl[20:20 + spike] = high
    return kl


def test_rmse_catches_a_four_token_spike_that_the_mean_misses():
    kl = spike_kl()
    seq = torch.zeros(60, dtype=torch.long)
    mean = aggregate(kl, seq, 1, "mean")
    rmse = aggregate(kl, seq, 1, "rmse")
    assert float(mean) < 0.5 < float(rmse)  # the seed's finding: a mean barrier at tau=0.5 never fires


def test_aggregators_match_hand_computed_values():
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 0.0])
    seq = torch.tensor([0, 0, 0, 0, 1, 1])
    assert aggregate(vals, seq, 2, "mean").tolist() == [2.5, 5.0]
    torch.testing.assert_close(aggregate(vals, seq, 2, "rmse"),
                               torch.tensor([math.sqrt(30 / 4), math.sqrt(50)]))
    assert aggregate(vals, seq, 2, "max").tolist() == [4.0, 10.0]
    # p95 with linear interpolation: [1,2,3,4] -> 3 + 0.85 * 1; [10, 0] -> 0 + 0.95 * 10
    torch.testing.assert_close(aggregate(vals, seq, 2, "p95"), torch.tensor([3.85, 9.5]))


def test_aggregate_handles_unsorted_positions():
    vals = torch.tensor([10.0, 1.0, 0.0, 3.0])
    seq = torch.tensor([1, 0, 1, 0])
    assert aggregate(vals, seq, 2, "max").tolist() == [3.0, 10.0]
    assert aggregate(vals, seq, 2, "mean").tolist() == [2.0, 5.0]


def test_aggregate_is_differentiable():
    vals = torch.tensor([0.5, 1.5, 2.0, 0.1], requires_grad=True)
    seq = torch.tensor([0, 0, 1, 1])
    for agg in ("mean", "rmse", "p95", "max"):
        (g,) = torch.autograd.grad(aggregate(vals, seq, 2, agg).sum(), vals)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, agg


def test_token_kl_directions_and_chunking():
    g = torch.Generator().manual_seed(0)
    s, r = torch.randn(7, 11, generator=g), torch.randn(7, 11, generator=g)
    ls, lr = torch.log_softmax(s, -1), torch.log_softmax(r, -1)
    torch.testing.assert_close(token_kl(s, r, "kl_rev", chunk=3), (ls.exp() * (ls - lr)).sum(-1))
    torch.testing.assert_close(token_kl(s, r, "kl_fwd", chunk=2), (lr.exp() * (lr - ls)).sum(-1))
    assert float(token_kl(s, s).abs().max()) < 1e-6
    with pytest.raises(ValueError):
        token_kl(s, r, "js")


def test_barrier_is_a_hinge_and_lambda_grows_with_rounds():
    assert float(barrier(torch.tensor(0.4), 0.5, 2.0)) == 0.0
    assert float(barrier(torch.tensor(0.9), 0.5, 2.0)) == pytest.approx(0.8)
    assert round_lambda(1.0, 0, 1.0) == 1.0 and round_lambda(1.0, 3, 1.0) == 4.0
    assert round_lambda(2.0, 3, 0.0) == 2.0


def test_lora_sigma_max_equals_the_dense_spectral_norm():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 30, generator=g), torch.randn(20, 4, generator=g)
    dense = torch.linalg.matrix_norm(0.5 * b @ a, ord=2)
    torch.testing.assert_close(lora_sigma_max(a, b, 0.5), dense)
