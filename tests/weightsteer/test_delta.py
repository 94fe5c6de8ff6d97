import pytest
import torch

from steerheal.errors import SteerhealError
from steerheal.models import load_model
from steerheal.weightsteer.delta import WeightDelta, factorise

PROMPT = "Tell me about the weather."


@pytest.fixture(scope="module")
def tiny_bf16():
    """bf16 weights, so that W + a*dW - a*dW would not round-trip: restoring must use the backup."""
    return load_model("tiny-random-llama", "cpu", torch.bfloat16)


def random_delta(lm, names=("model.layers.1.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight",
                            "model.layers.2.mlp.up_proj.weight"), seed=0, rank=None) -> WeightDelta:
    params = dict(lm.model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for n in names:
        shape = params[n].shape
        if rank:
            tensors[n] = torch.randn(shape[0], rank, generator=gen) @ torch.randn(rank, shape[1], generator=gen) * 0.01
        else:
            tensors[n] = torch.randn(shape, generator=gen) * 0.01
    return WeightDelta.from_tensors(tensors, model=lm.spec, revision=lm.revision, kind="test")


def logits(lm, text=PROMPT):
    ids = lm.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


def snapshot(lm):
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def test_alpha_zero_leaves_logits_unchanged(tiny_bf16):
    delta = random_delta(tiny_bf16)
    before = logits(tiny_bf16)
    with delta.applied(tiny_bf16, 0.0):
        during = logits(tiny_bf16)
    assert torch.equal(before, during)


def test_nonzero_alpha_changes_logits_and_exit_restores_bit_for_bit(tiny_bf16):
    delta = random_delta(tiny_bf16)
    before_w, before = snapshot(tiny_bf16), logits(tiny_bf16)
    with delta.applied(tiny_bf16, 3.7):
        changed = logits(tiny_bf16)
        w = dict(tiny_bf16.model.named_parameters())
        n = delta.names[0]
        expected = (before_w[n].float() + 3.7 * delta.dense(n)).to(torch.bfloat16)
        assert torch.equal(w[n].detach(), expected)
    assert not torch.allclose(before, changed)
    after = snapshot(tiny_bf16)
    assert all(torch.equal(before_w[n], after[n]) for n in before_w)
    assert torch.equal(before, logits(tiny_bf16))


def test_exit_restores_weights_when_the_block_raises(tiny_bf16):
    delta = random_delta(tiny_bf16)
    before_w = snapshot(tiny_bf16)
    with pytest.raises(RuntimeError, match="boom"), delta.applied(tiny_bf16, -2.0):
        raise RuntimeError("boom")
    after = snapshot(tiny_bf16)
    assert all(torch.equal(before_w[n], after[n]) for n in before_w)


def test_negation_and_scaling_are_lazy_and_exact(tiny_llama):
    delta = random_delta(tiny_llama)
    n = delta.names[0]
    assert torch.equal((-delta).dense(n), -delta.dense(n))
    assert torch.allclose(delta.scaled(2.5).dense(n), 2.5 * delta.dense(n))
    assert (-delta).dense_parts[n] is delta.dense_parts[n]  # no copy


def test_low_rank_changes_are_stored_as_exact_factors():
    gen = torch.Generator().manual_seed(1)
    low = torch.randn(96, 6, generator=gen) @ torch.randn(6, 160, generator=gen)
    u, v = factorise(low)
    assert u.shape == (96, 6) and v.shape == (6, 160)
    assert torch.allclose(u @ v, low, atol=1e-5 * low.abs().max())
    assert factorise(torch.randn(96, 160, generator=gen)) is None  # full rank stays dense
    assert factorise(torch.zeros(8, 8)) is None


def test_save_load_round_trip_keeps_tensors_and_provenance(tiny_llama, tmp_path):
    delta = WeightDelta.from_tensors({**{n: random_delta(tiny_llama, rank=2).dense(n)
                                         for n in random_delta(tiny_llama).names}},
                                     model=tiny_llama.spec, revision="abc", kind="lora", meta={"pair": "x"})
    assert delta.factors  # rank 2: factored
    back = WeightDelta.load(delta.save(tmp_path / "dW.safetensors"))
    assert (back.model, back.revision, back.kind, back.meta) == (tiny_llama.spec, "abc", "lora", {"pair": "x"})
    assert back.names == delta.names
    assert all(torch.allclose(back.dense(n), delta.dense(n)) for n in delta.names)
    assert back.nbytes == delta.nbytes


def test_difference_refuses_other_bases_and_mismatched_parameters(tiny_llama):
    a = random_delta(tiny_llama)
    other_base = WeightDelta(dict(a.dense_parts), model="tiny-random-gemma3", kind="test")
    with pytest.raises(SteerhealError, match="different bases"):
        WeightDelta.difference(a, other_base)
    fewer = random_delta(tiny_llama, names=("model.layers.1.self_attn.q_proj.weight",))
    with pytest.raises(SteerhealError, match="change different parameters"):
        WeightDelta.difference(a, fewer)
    same = WeightDelta.difference(a, a)
    assert all(float(same.dense(n).abs().max()) == 0 for n in same.names)


def test_delta_for_another_model_is_refused(tiny_llama, tiny_gemma):
    delta = random_delta(tiny_llama)
    with pytest.raises(SteerhealError, match="trained on 'tiny-random-llama'"):
        delta.check_compatible(tiny_gemma)
    wrong_shape = WeightDelta({"model.layers.1.self_attn.q_proj.weight": torch.zeros(3, 3)}, model=tiny_llama.spec)
    with pytest.raises(SteerhealError, match="shape"), wrong_shape.applied(tiny_llama, 1.0):
        pass
    missing = WeightDelta({"model.layers.99.mlp.up_proj.weight": torch.zeros(3, 3)}, model=tiny_llama.spec)
    with pytest.raises(SteerhealError, match="does not have"):
        missing.check_compatible(tiny_llama)


def test_loading_a_non_delta_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SteerhealError, match="not a readable safetensors"):
        WeightDelta.load(bad)
    with pytest.raises(SteerhealError, match="no dW file"):
        WeightDelta.load(tmp_path / "missing.safetensors")
