"""Property-based tests (hypothesis) of the config parser, the KL aggregators and the
n-gram repetition scorer: invariants that must hold for every input, not just examples."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerheal.config import (
    CalibrateConfig,
    EvalConfig,
    FilterConfig,
    GenerateConfig,
    HealConfig,
    RunConfig,
    WeightSteerConfig,
    from_dict,
)
from steerheal.errors import SteerhealError
from steerheal.filters import repetition
from steerheal.heal.losses import aggregate, token_kl

CONFIGS = [CalibrateConfig, EvalConfig, FilterConfig, GenerateConfig, HealConfig, WeightSteerConfig]
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                       | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_config_parser_returns_a_config_or_a_steerhealerror_never_anything_else(cls, data):
    names = [f.name for f in dataclasses.fields(cls)]
    keys = data.draw(st.lists(st.sampled_from(names) | st.text(min_size=1, max_size=6), max_size=4))
    values = {k: data.draw(JSONISH) for k in keys}
    try:
        cfg = from_dict(cls, values)
    except SteerhealError as err:
        assert "Fix:" in str(err) and "\n" not in str(err)
        return
    assert isinstance(cfg, cls)
    assert from_dict(cls, dataclasses.asdict(cfg)) == cfg  # a parsed config round-trips


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in RunConfig.__dataclass_fields__),
                       JSONISH, min_size=1, max_size=3))
def test_unknown_keys_are_always_named_in_the_error(extra):
    with pytest.raises(SteerhealError) as err:
        RunConfig.from_dict(extra)
    assert "unknown key(s)" in str(err.value) and repr(sorted(extra)[0]) in str(err.value)


def per_sequence(draw_lengths, values):
    seq = torch.repeat_interleave(torch.arange(len(draw_lengths)), torch.tensor(draw_lengths))
    return seq, torch.tensor(values[: len(seq)], dtype=torch.float64)


@st.composite
def kl_batches(draw):
    lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    values = draw(st.lists(st.floats(0, 50, allow_nan=False), min_size=sum(lengths), max_size=sum(lengths)))
    seq, vals = per_sequence(lengths, values)
    return seq, vals, len(lengths)


@settings(max_examples=300, deadline=None)
@given(kl_batches())
def test_aggregators_are_ordered_per_sequence(batch):
    seq, vals, n = batch
    agg = {a: aggregate(vals, seq, n, a) for a in ("mean", "rmse", "p95", "max")}
    mins = torch.stack([vals[seq == i].min() for i in range(n)])
    tol = 1e-9 * (1 + agg["max"])
    assert torch.all(agg["rmse"] >= agg["mean"] - tol)
    assert torch.all(agg["max"] >= agg["rmse"] - tol)
    assert torch.all(agg["max"] >= agg["p95"] - tol) and torch.all(agg["p95"] >= mins - tol)
    assert torch.allclose(agg["mean"], torch.stack([vals[seq == i].mean() for i in range(n)]))


@settings(max_examples=200, deadline=None)
@given(kl_batches(), st.randoms(use_true_random=False))
def test_aggregators_ignore_the_order_of_positions(batch, rnd):
    seq, vals, n = batch
    perm = list(range(len(seq)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    for a in ("mean", "rmse", "p95", "max"):
        assert torch.allclose(aggregate(vals, seq, n, a), aggregate(vals[perm], seq[perm], n, a))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(2, 40), st.integers(0, 2**31 - 1), st.sampled_from(["kl_rev", "kl_fwd"]))
def test_kl_is_zero_on_identical_distributions_and_positive_otherwise(n, vocab, seed, kind):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * 3
    assert torch.allclose(token_kl(logits, logits.clone(), kind), torch.zeros(n), atol=1e-6)
    other = logits + torch.randn(n, vocab, generator=g)
    assert torch.all(token_kl(logits, other, kind) >= -1e-6)


WORDS = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=6), min_size=0, max_size=30)


@settings(max_examples=300, deadline=None)
@given(WORDS, st.lists(st.sampled_from([" ", "  ", "\n", "\t "]), min_size=30, max_size=30))
def test_repetition_is_a_share_unchanged_by_case_and_whitespace(words, gaps):
    text = " ".join(words)
    score = repetition(text)
    assert 0.0 <= score <= 1.0
    assert repetition(text.upper()) == score
    gapped = "".join(w + g for w, g in zip(words, gaps, strict=False))  # every word followed by some whitespace
    assert repetition(gapped) == repetition("".join(w + " " for w in words))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghij", min_size=1, max_size=8), st.integers(5, 30))
def test_a_word_loop_scores_as_fully_repetitive(word, times):
    assert repetition(" ".join([word] * times)) == 1.0
