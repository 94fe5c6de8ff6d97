import pytest
import torch

from steerheal import data
from steerheal.chat import encode, render_prompt
from steerheal.config import GenerateConfig, HealConfig
from steerheal.errors import SteerhealError
from steerheal.generate import generate
from steerheal.heal import train as train_mod
from steerheal.heal.adapters import AdapterHistory, LoraSpec
from steerheal.heal.data import collate, make_example
from steerheal.heal.train import evaluate_heal, heal_round
from steerheal.models import load_model
from steerheal.steering import SteeringVector, SteerSpec


def fresh():
    return load_model("tiny-random-llama", "cpu", torch.float32)


def logits(lm, prompts=("hi", "what is up")):
    batch = encode(lm.tokenizer, [render_prompt(lm.tokenizer, p) for p in prompts], 512)
    with torch.no_grad():
        return lm.model(**batch.model_inputs()).logits


def perturb(history, scale=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in history.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def steered_examples(lm, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = SteeringVector({1: 30 * torch.randn(lm.d_model, generator=g)}, model_spec=lm.spec,
                       model_revision=lm.revision)
    recs = generate(lm, data.heldout_prompts()[:n], steer=[SteerSpec(v, 1.0)],
                    config=GenerateConfig(max_new_tokens=24, seed=seed))
    return [make_example(lm.tokenizer, r.prompt_text, r.completion, r.token_ids, r.finished, 256,
                         lm.tokenizer.eos_token_id) for r in recs]


def test_reference_gating_gives_exact_base_and_previous_student_logits():
    lm = fresh()
    base = logits(lm)
    hist = AdapterHistory(lm)
    hist.new_round(LoraSpec(rank=4))
    perturb(hist, seed=1)
    prev_student = logits(lm)
    hist.new_round(LoraSpec(rank=4))
    assert torch.equal(logits(lm), prev_student)  # a fresh adapter starts at B = 0
    perturb(hist, seed=2)
    student = logits(lm)
    assert not torch.allclose(student, prev_student)
    with hist.reference("base"):
        assert torch.equal(logits(lm), base)
    with hist.reference("prev"):
        assert torch.equal(logits(lm), prev_student)
    assert torch.equal(logits(lm), student)  # gates restored
    assert all("r01" in n for n, p in lm.model.named_parameters() if p.requires_grad)


def two_perturbed_rounds():
    """A fresh tiny model with adapters r00 and r01, both moved off their zero init."""
    lm = fresh()
    hist = AdapterHistory(lm)
    for seed in (1, 2):
        hist.new_round(LoraSpec(rank=4))
        perturb(hist, seed=seed)
    return lm, hist


def test_stacked_adapters_equal_merged_weights():
    lm, hist = two_perturbed_rounds()
    hist.set_gate("r00", 0.5)
    stacked = logits(lm)
    merged = hist.merged_copy()
    batch = encode(lm.tokenizer, [render_prompt(lm.tokenizer, p) for p in ("hi", "what is up")], 512)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch.model_inputs()).logits, stacked, atol=1e-4, rtol=0)


def test_saved_history_reloads_in_peft_format(tmp_path):
    from peft import PeftModel

    lm = fresh()
    hist = AdapterHistory(lm)
    hist.new_round(LoraSpec(rank=4))
    perturb(hist)
    student = logits(lm)
    hist.save(tmp_path)
    again = fresh()
    AdapterHistory.load(again, tmp_path)
    assert torch.equal(logits(again), student)
    plain = fresh()
    plain.model = PeftModel.from_pretrained(plain.model, str(tmp_path / "r00"))
    torch.testing.assert_close(logits(plain), student)


def test_examples_align_prompt_and_completion_exactly():
    lm = fresh()
    tok = lm.tokenizer
    prompt = render_prompt(tok, "hello")
    ex = make_example(tok, prompt, "abc", None, True, 256, tok.eos_token_id)
    ids = tok(prompt + "abc", add_special_tokens=False)["input_ids"]
    assert ex.input_ids == ids + [tok.eos_token_id] and ex.n_prompt == len(tok(prompt)["input_ids"])
    batch = collate([ex], tok.pad_token_id)
    targets = batch.input_ids[0, 1:][batch.target_mask[0, :-1]]
    assert tok.decode(targets) == "abc" + tok.eos_token
    cut = make_example(tok, prompt, "x" * 50, None, False, ex.n_prompt + 10, None)
    assert cut.truncated and len(cut.input_ids) == ex.n_prompt + 10
    with pytest.raises(SteerhealError, match="no room"):
        make_example(tok, prompt, "abc", None, True, ex.n_prompt, None)


def test_nll_control_has_an_exactly_zero_barrier():
    lm = fresh()
    res = heal_round(AdapterHistory(lm), steered_examples(lm), HealConfig(reg="nll", epochs=1, lr=1e-3),
                     rounds_baked=0)
    assert res.steps and all(s["barrier"] == 0.0 and s["D"] == 0.0 and not s["active"] for s in res.steps)
    assert all(s["grad_norm_barrier"] == 0.0 and s["grad_norm_nll"] > 0 for s in res.steps)


def test_kl_barrier_keeps_the_student_closer_to_the_reference():
    val = {}
    for reg in ("nll", "kl_rev"):
        lm = fresh()
        examples = steered_examples(lm)
        hist = AdapterHistory(lm)
        cfg = HealConfig(reg=reg, tau=0.0, lam=100.0, lr=3e-3, epochs=3, val_frac=0.0, seed=0)
        heal_round(hist, examples, cfg, rounds_baked=0)
        val[reg] = evaluate_heal(hist, examples, HealConfig(reg="kl_rev", agg="rmse"), 0)["D"]
    assert val["kl_rev"] < val["nll"]


def test_non_finite_loss_stops_the_round_with_a_clear_error(monkeypatch):
    lm = fresh()
    examples = steered_examples(lm, n=4)
    real = train_mod.heal_loss

    def nan_loss(*args, **kwargs):
        terms = real(*args, **kwargs)
        terms["loss"] = terms["loss"] * float("nan")
        return terms
    monkeypatch.setattr(train_mod, "heal_loss", nan_loss)
    with pytest.raises(SteerhealError, match="non-finite heal loss"):
        heal_round(AdapterHistory(lm), examples, HealConfig(epochs=1), rounds_baked=0)


def test_zero_kept_completions_is_a_clear_error():
    lm = fresh()
    with pytest.raises(SteerhealError, match="no kept completions"):
        heal_round(AdapterHistory(lm), [], HealConfig(), rounds_baked=0)


@pytest.mark.parametrize("overrides", [
    {"reg": "kl_fwd", "agg": "p95"},
    {"reg": "kl_rev", "agg": "max", "barrier_ref": "prev", "lam_round_pow": 1.0},
    {"reg": "kl_rev", "agg": "mean", "spectral_lam": 0.1, "weight_decay": 0.01},
])
def test_every_barrier_variant_trains_and_logs(overrides):
    lm = fresh()
    examples = steered_examples(lm, n=6)
    hist = AdapterHistory(lm)
    heal_round(hist, examples, HealConfig(epochs=1, tau=0.0, val_frac=0.0), rounds_baked=0)  # a previous round
    res = heal_round(hist, examples, HealConfig(epochs=1, tau=0.0, val_frac=0.0, **overrides), rounds_baked=1)
    assert res.adapter == "r01" and res.steps
    for s in res.steps:
        assert s["D"] >= 0 and all(k in s for k in ("nll", "barrier", "grad_norm_nll", "grad_norm_barrier", "lr"))
    expected_lam = 1.0 * 2 ** overrides.get("lam_round_pow", 0.0)
    assert res.steps[0]["lam_r"] == expected_lam


def test_gates_dial_the_latest_round_between_previous_and_current_student():
    lm, hist = two_perturbed_rounds()
    student = logits(lm)
    with hist.reference("prev"):
        prev = logits(lm)
    with hist.gated({"r01": 0.0}):
        torch.testing.assert_close(logits(lm), prev)
    with hist.reference("base"):
        base = logits(lm)
    with hist.gated({"r00": 0.0, "r01": 0.0}):
        torch.testing.assert_close(logits(lm), base)
    with hist.gated({"r01": 0.5}):
        half = logits(lm)
        assert not torch.allclose(half, prev) and not torch.allclose(half, student)
    assert torch.equal(logits(lm), student) and hist.gates == {"r00": 1.0, "r01": 1.0}
