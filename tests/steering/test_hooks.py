import pytest
import torch

from steerheal.chat import encode, render_prompt
from steerheal.errors import SteerhealError
from steerheal.steering import SteeringVector, SteerSpec, steer, steering
from steerheal.steering.hooks import _make_hook, _Offset

PROMPTS = ["hi", "What is the capital of France?", "tell me about dragons"]


def vec(lm, layers=(1, 2), seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(directions={k: scale * torch.randn(lm.d_model, generator=g) for k in layers},
                          model_spec=lm.spec, model_revision=lm.revision)


def batch_for(lm, prompts=PROMPTS):
    return encode(lm.tokenizer, [render_prompt(lm.tokenizer, p) for p in prompts], 512)


def logits(lm, batch):
    with torch.no_grad():
        return lm.model(**batch.model_inputs()).logits


def hook_count(lm):
    return sum(len(b._forward_hooks) for b in lm.blocks)


def test_zero_coefficient_reproduces_unsteered_logits_exactly(tiny_llama):
    batch = batch_for(tiny_llama)
    plain = logits(tiny_llama, batch)
    with steer(tiny_llama, vec(tiny_llama), 0.0):
        zero = logits(tiny_llama, batch)
    with steer(tiny_llama, vec(tiny_llama), 1.0):
        moved = logits(tiny_llama, batch)
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, moved)


def test_zero_coefficient_is_bit_exact_in_bf16(smollm):
    batch = batch_for(smollm)
    v = SteeringVector(directions={15: torch.randn(smollm.d_model)}, model_spec=smollm.spec,
                       model_revision=smollm.revision)
    plain = logits(smollm, batch)
    with steer(smollm, v, 0.0):
        assert torch.equal(plain, logits(smollm, batch))


def test_hooks_are_removed_on_exit_and_on_exception(tiny_llama):
    before = hook_count(tiny_llama)
    with steer(tiny_llama, vec(tiny_llama), 2.0, scope="generated", prompt_len=5):
        assert hook_count(tiny_llama) == before + 2
    assert hook_count(tiny_llama) == before
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_llama, vec(tiny_llama), 2.0):
            raise RuntimeError("boom")
    assert hook_count(tiny_llama) == before
    stack = tiny_llama.model.model
    assert len(stack._forward_pre_hooks) == 0


def test_steering_never_mutates_the_stored_vector(tiny_llama):
    v = vec(tiny_llama)
    saved = {k: t.clone() for k, t in v.directions.items()}
    with steer(tiny_llama, v, 5.0, cosine_gated=True):
        logits(tiny_llama, batch_for(tiny_llama))
    assert all(torch.equal(saved[k], v.directions[k]) for k in saved)


def captured_block_output(lm, layer, batch, specs, prompt_len=None):
    """Output of block `layer` after the steering hook (ours runs first, then this one)."""
    seen = {}
    with steering(lm, specs, prompt_len=prompt_len):
        handle = lm.blocks[layer].register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
        try:
            logits(lm, batch)
        finally:
            handle.remove()
    out = seen["h"]
    return out if isinstance(out, torch.Tensor) else out[0]


@pytest.mark.parametrize("scope", ["prompt", "generated"])
def test_token_scope_adds_only_inside_the_scope(tiny_llama, scope):
    batch = batch_for(tiny_llama)
    P = batch.prompt_len - 4  # pretend the last 4 tokens were generated
    v = vec(tiny_llama, layers=(2,))
    base = captured_block_output(tiny_llama, 2, batch, [])
    out = captured_block_output(tiny_llama, 2, batch, [SteerSpec(v, 2.0, scope=scope)], prompt_len=P)
    diff = out - base
    inside = slice(0, P) if scope == "prompt" else slice(P, None)
    outside = slice(P, None) if scope == "prompt" else slice(0, P)
    torch.testing.assert_close(diff[:, inside], (2.0 * v.directions[2]).expand_as(diff[:, inside]))
    assert torch.equal(diff[:, outside], torch.zeros_like(diff[:, outside]))


def test_scoped_steering_without_prompt_len_is_a_clear_error(tiny_llama):
    with pytest.raises(SteerhealError, match="prompt length"):
        with steer(tiny_llama, vec(tiny_llama), 1.0, scope="generated"):
            logits(tiny_llama, batch_for(tiny_llama))


def test_cosine_gating_scales_by_positive_cosine(tiny_llama):
    batch = batch_for(tiny_llama)
    v = vec(tiny_llama, layers=(2,))
    base = captured_block_output(tiny_llama, 2, batch, [])
    out = captured_block_output(tiny_llama, 2, batch, [SteerSpec(v, 2.0, cosine_gated=True)])
    cos = torch.nn.functional.cosine_similarity(base, v.directions[2].view(1, 1, -1), dim=-1)
    expected = cos.clamp(min=0).unsqueeze(-1) * 2.0 * v.directions[2]
    torch.testing.assert_close(out - base, expected, atol=1e-5, rtol=1e-4)
    assert (cos < 0).any() and (cos > 0).any()  # both branches of the gate were exercised


def test_several_vectors_add_up(tiny_llama):
    batch = batch_for(tiny_llama)
    a, b = vec(tiny_llama, seed=1), vec(tiny_llama, layers=(2, 3), seed=2)
    with steering(tiny_llama, [SteerSpec(a, 1.5), SteerSpec(b, -0.5)]):
        both = logits(tiny_llama, batch)
    with steer(tiny_llama, 1.5 * a + (-0.5) * b, 1.0):
        combined = logits(tiny_llama, batch)
    torch.testing.assert_close(both, combined, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scope,gated", [("all", False), ("generated", False), ("prompt", True)])
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_kv_cache_generation_matches_full_reforward(fixture, scope, gated, request):
    lm = request.getfixturevalue(fixture)
    batch = batch_for(lm)
    P = batch.prompt_len
    spec = [SteerSpec(vec(lm), 4.0, scope=scope, cosine_gated=gated)]
    with torch.no_grad(), steering(lm, spec, prompt_len=P):
        out = lm.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                max_new_tokens=12, do_sample=False, output_logits=True,
                                return_dict_in_generate=True, pad_token_id=lm.tokenizer.pad_token_id,
                                eos_token_id=None)
    cached = torch.stack(out.logits, dim=1)  # [B, T, V]
    seqs = out.sequences
    mask = torch.cat([batch.attention_mask, torch.ones_like(seqs[:, P:])], dim=1)
    with torch.no_grad(), steering(lm, spec, prompt_len=P):
        full = lm.model(input_ids=seqs, attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    torch.testing.assert_close(cached, full[:, P - 1:-1].float(), atol=1e-4, rtol=1e-4)


def test_hook_handles_tuple_outputs():
    offset = _Offset()
    v = torch.ones(4)
    hook = _make_hook([(2 * v, None, "all")], offset, None)
    h = torch.zeros(1, 3, 4)
    out = hook(None, (), (h, "cache"))
    assert isinstance(out, tuple) and out[1] == "cache"
    assert torch.equal(out[0], torch.full((1, 3, 4), 2.0))
