import json
import math

import pytest
import torch

from steerheal.config import ResistConfig
from steerheal.errors import SteerhealError
from steerheal.models import load_model
from steerheal.resistance import (
    Fact,
    check_facts,
    fact_summary,
    fact_vector,
    load_facts,
    model_summary,
    question_text,
    run_resist,
    sweep_fact,
    unit_coeff,
)
from steerheal.steering.vector import SteeringVector

QUESTIONS = ("which letter is it?", "name the letter?", "what letter is meant?", "which one is it?")


def planted_model(seed: int = 0):
    """A tiny Llama whose blocks are all identity and whose readout of 'Z' vs 'X' is linear.

    With every block's o_proj and down_proj zeroed, the final residual at the last prompt
    token is its embedding E plus whatever is added at a block output (c * v). The log-ratio
    log p(Z) - log p(X) is then w . (g * (E + c v)) / rms(E + c v) with w = u_Z - u_X and g the
    final norm's weight, so its sign flips exactly at c* = -(w . g*E) / (w . g*v).
    """
    lm = load_model("tiny-random-llama", "cpu", torch.float32)
    with torch.no_grad():
        for block in lm.blocks:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(lm.d_model, generator=gen)
        head = lm.model.get_output_embeddings().weight
        x_id, z_id = (lm.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "XZ")
        last = lm.tokenizer(question_text(lm, QUESTIONS[0]), add_special_tokens=False)["input_ids"][-1]
        g = lm.model.model.norm.weight.detach().clone()
        emb = lm.model.get_input_embeddings().weight[last].detach().clone()
        if float(w @ (g * emb)) > 0:
            w = -w  # unsteered, the true answer X must win
        head[x_id] = 0.0
        head[z_id] = w
    v = w / w.norm() * float(emb.norm())
    a, b = float(w @ (g * emb)), float(w @ (g * v))
    return lm, v, -a / b


def test_measured_flip_point_matches_a_planted_linear_readout():
    lm, v, c_star = planted_model()
    assert c_star > 0
    fact = Fact("planted", true="X", false="Z", questions=QUESTIONS)
    layer = 1
    vector = SteeringVector({layer: v}, model_spec=lm.spec, model_revision=lm.revision, n_layers=lm.n_layers)
    cfg = ResistConfig(layers=str(layer), kl_prompts=2, kl_tokens=4, target_kl=0.05)
    unit, _ = unit_coeff(lm, vector, cfg)
    m_star = c_star / unit
    grid = (0.5, 0.8, 0.95, 1.05, 1.25, 2.0)
    cfg = ResistConfig(layers=str(layer), kl_prompts=2, kl_tokens=4, target_kl=0.05,
                       multipliers=(-1.0, *(m * m_star for m in grid)))
    controls = [Fact("c", true="X", false="Z", questions=QUESTIONS)]
    kl_texts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"] * 2
    sweep = sweep_fact(lm, fact, vector, unit, controls, kl_texts, cfg)
    for p in sweep.points:  # every measured sign is the construction's sign
        assert p.false_wins == (p.coeff > c_star), (p.coeff, c_star)
    flip = next(p for p in sweep.points if p.false_wins)
    assert flip.multiplier == pytest.approx(1.05 * m_star)
    summary = fact_summary(sweep, cfg)
    assert summary["kl_flip"] == flip.kl > 0
    assert summary["base_log_ratio"] < 0
    assert all(s > 0 for s in summary["slopes"])  # steering towards Z raises Z: steerable, not anti


def test_fact_vector_points_from_true_to_false_answer(tiny_llama):
    fact = Fact("f", true="cat", false="dog", questions=QUESTIONS)
    cfg = ResistConfig(layers="1,2", n_extract=2)
    vec = fact_vector(tiny_llama, fact, cfg)
    assert vec.layers == [1, 2] and vec.pos == "dog" and vec.neg == "cat" and vec.n_contexts == 2
    swapped = fact_vector(tiny_llama, Fact("f", true="dog", false="cat", questions=QUESTIONS), cfg)
    for k in vec.layers:
        torch.testing.assert_close(vec.directions[k], -swapped.directions[k])


def test_model_summary_reads_flips_windows_and_anti_steerable_samples():
    rows = [{"fact": "a", "kl_flip": 0.5, "kl_break": 2.0, "window": 1.5, "slopes": [1.0, 2.0], "base_log_ratio": -1},
            {"fact": "b", "kl_flip": math.inf, "kl_break": 1.0, "window": -math.inf, "slopes": [-1.0, 0.5],
             "base_log_ratio": -2}]
    s = model_summary(rows)
    assert s["flipped"] == 0.5 and s["resists"] == 0.5 and s["anti_steerable"] == 0.25
    assert s["known_unsteered"] == 1.0 and s["n_samples"] == 4


def test_resist_run_writes_readout_and_resumes(tmp_path, tiny_llama):
    facts = [Fact(f"f{i}", true=t, false=f, questions=QUESTIONS) for i, (t, f) in
             enumerate([("cat", "dog"), ("red", "blue"), ("sun", "moon")])]
    cfg = ResistConfig(layers="1", kl_prompts=2, kl_tokens=4, target_kl=0.05, multipliers=(-1.0, 1.0, 2.0),
                       n_control=2)
    out = tmp_path / "resist"
    first = run_resist(tiny_llama, facts[:2], cfg, out)
    assert first["summary"]["n_facts"] == 2
    before = (out / "sweeps.jsonl").read_text()
    again = run_resist(tiny_llama, facts, cfg, out)  # resumes: the two swept facts are not redone
    assert (out / "sweeps.jsonl").read_text().startswith(before)
    assert again["summary"]["n_facts"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "tiny-random-llama" and (out / "resist.png").stat().st_size > 0
    assert "KL_flip" in (out / "table.md").read_text()
    with pytest.raises(SteerhealError, match="other settings"):
        run_resist(tiny_llama, facts, ResistConfig(layers="2", kl_prompts=2, kl_tokens=4), out)


def test_shipped_facts_load_and_alternatives_tokenise_differently(smollm):
    facts = load_facts()
    assert len(facts) >= 40 and all(len(f.questions) >= 3 for f in facts)
    check_facts(smollm, facts, ResistConfig())


def test_bad_facts_are_clear_errors(tmp_path, tiny_llama):
    with pytest.raises(SteerhealError, match="tokenise identically"):
        check_facts(tiny_llama, [Fact("x", true="Rome", false="Rome", questions=QUESTIONS)], ResistConfig())
    with pytest.raises(SteerhealError, match="paraphrases"):
        check_facts(tiny_llama, [Fact("x", true="a", false="b", questions=QUESTIONS[:2])], ResistConfig())
    bad = tmp_path / "facts.jsonl"
    bad.write_text('{"id": "x", "true": "a"}\n')
    with pytest.raises(SteerhealError, match="is not a fact"):
        load_facts(bad)
    with pytest.raises(SteerhealError, match="does not exist"):
        load_facts(tmp_path / "missing.jsonl")
