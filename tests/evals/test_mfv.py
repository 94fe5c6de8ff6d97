import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from steerheal.config import EvalConfig
from steerheal.errors import SteerhealError
from steerheal.evals import FOUNDATIONS, evaluate, load_dataset, prompt_baseline
from steerheal.evals.report import format_summary
from steerheal.evals.scoring import candidate_token_ids
from steerheal.evals.templates import JsonBoolTemplate
from steerheal.evals.think import think_markers
from steerheal.evals.vignettes import load_dir

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinymfv"


@contextmanager
def logit_bias(lm, bias: dict[int, float]):
    """A model whose output logits get a constant bias on some token ids."""
    ids = torch.tensor(list(bias))
    vals = torch.tensor(list(bias.values()))

    def hook(_m, _i, out):
        out = out.clone()
        out[..., ids] += vals.to(out.dtype)
        return out
    handle = lm.model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def token_ids(lm, strings):
    ids = [lm.tokenizer(s, add_special_tokens=False)["input_ids"] for s in strings]
    assert all(len(i) == 1 for i in ids), ids  # the test needs single-token answers
    return [i[0] for i in ids]


def test_constant_true_bias_cancels_in_json_bool_wrongness(smollm_fp32):
    items = load_dataset("own", limit=8)
    cfg = EvalConfig(protocol="json-bool", batch_size=8)
    plain = evaluate(smollm_fp32, items, cfg)
    with logit_bias(smollm_fp32, {t: 2.0 for t in token_ids(smollm_fp32, JsonBoolTemplate().true_variants)}):
        biased = evaluate(smollm_fp32, items, cfg)
    for a, b in zip(plain.rows, biased.rows, strict=True):
        assert b["p_true_wrong"] > a["p_true_wrong"] + 1e-3  # the bias is real ...
        assert b["wrongness"] == pytest.approx(a["wrongness"], abs=1e-5)  # ... and cancels
    # The probability average cancels it only to first order: it moves.
    moved = [abs(a["wrongness_prob"] - b["wrongness_prob"]) for a, b in zip(plain.rows, biased.rows, strict=True)]
    assert max(moved) > 1e-3


def fc_scores(result):
    return torch.tensor([[r["p"][f] for f in FOUNDATIONS] for r in result.rows])


def test_first_option_bias_cancels_over_cyclic_orders(smollm_fp32):
    items = load_dataset("own", limit=6)
    cfg = EvalConfig(protocol="forced-choice", orders="cyclic", batch_size=8)
    plain = evaluate(smollm_fp32, items, cfg)
    with logit_bias(smollm_fp32, {t: 3.0 for t in token_ids(smollm_fp32, [" A", "A"])}):
        biased = evaluate(smollm_fp32, items, cfg)
    torch.testing.assert_close(fc_scores(plain), fc_scores(biased), atol=1e-5, rtol=1e-4)
    assert biased.summary["pmass"] != pytest.approx(plain.summary["pmass"], abs=1e-4)


def test_linear_position_bias_cancels_over_forward_and_reverse(smollm_fp32):
    items = load_dataset("own", limit=6)
    cfg = EvalConfig(protocol="forced-choice", orders="fwd-rev", batch_size=8)
    plain = evaluate(smollm_fp32, items, cfg)
    bias = {}
    for k, lab in enumerate("ABCDEFG"):
        for t in token_ids(smollm_fp32, [f" {lab}", lab]):
            bias[t] = 0.4 * k  # a primacy/recency gradient over positions
    with logit_bias(smollm_fp32, bias):
        biased = evaluate(smollm_fp32, items, cfg)
    torch.testing.assert_close(fc_scores(plain), fc_scores(biased), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("protocol", ["forced-choice", "json-bool"])
@pytest.mark.parametrize("single_token", [False, True])
def test_scores_do_not_depend_on_batch_size(tiny_llama, protocol, single_token, tmp_path):
    template = None
    if single_token:  # byte tokenizer: one-character labels are single tokens
        fields = {"label_variants": ["{label}"]} if protocol == "forced-choice" else \
            {"true_variants": ["t"], "false_variants": ["f"]}
        template = tmp_path / "tpl.json"
        template.write_text(json.dumps(fields))
    items = load_dataset("own", limit=7)
    key = "p" if protocol == "forced-choice" else "wrongness"
    out = []
    for bs in (1, 3, 16):
        res = evaluate(tiny_llama, items, EvalConfig(protocol=protocol, batch_size=bs,
                                                     template=str(template) if template else None))
        out.append(torch.tensor([[r[key][f] for f in FOUNDATIONS] if key == "p" else [r[key], r["pmass"]]
                                 for r in res.rows]))
    torch.testing.assert_close(out[0], out[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0], out[2], atol=1e-4, rtol=0)


def test_label_that_merges_with_the_prefill_is_an_error(smollm):
    with pytest.raises(SteerhealError, match="tokenises ambiguously"):
        candidate_token_ids(smollm.tokenizer, ['Q {"answer": '], ["true"])  # ' ' + 'true' -> ' true'


def test_template_file_can_replace_fields_and_rejects_unknown_ones(tiny_llama, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"question": "Pick one letter.", "nope": 1}))
    with pytest.raises(SteerhealError, match="unknown template field"):
        evaluate(tiny_llama, load_dataset("own", limit=2), EvalConfig(template=str(path)))
    path.write_text(json.dumps({"question": "Pick one letter."}))
    res = evaluate(tiny_llama, load_dataset("own", limit=2), EvalConfig(template=str(path)))
    assert "Pick one letter." in res.prompts[0]


def test_think_budget_zero_and_positive(tiny_llama, smollm):
    items = load_dataset("own", limit=2)
    zero = evaluate(tiny_llama, items, EvalConfig(think=0))
    four = evaluate(tiny_llama, items, EvalConfig(think=4))
    assert zero.prompts[0].endswith("Answer:") and four.prompts[0].endswith("Answer:")
    assert len(four.prompts[0]) > len(zero.prompts[0])
    opener, _ = think_markers(smollm.tokenizer)
    assert "<think>" not in opener  # SmolLM2 has no think token: plain-text scratchpad


def test_prompt_baseline_puts_the_persona_in_the_system_turn(tiny_llama):
    res = prompt_baseline(tiny_llama, "You respect authority.", load_dataset("own", limit=2))
    assert "<|im_start|>system\nYou respect authority." in res.prompts[0]
    assert res.meta["baseline"] == "prompt" and res.config["system"] == "You respect authority."


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"tiny-mfv reference data not found at {SHARED}")
@pytest.mark.parametrize("protocol", ["forced-choice", "json-bool"])
def test_embedded_model_on_the_full_classic_set(smollm, protocol, capsys):
    items = load_dir(SHARED, "classic")
    res = evaluate(smollm, items, EvalConfig(protocol=protocol), dataset="tinymfv:classic")
    assert len(items) == 132
    assert len(res.rows) == (132 if protocol == "forced-choice" else 264)
    assert 0 < res.summary["pmass"] <= 1
    table = format_summary(res.to_dict())
    print(table)
    assert all(f in table for f in FOUNDATIONS) and "pmass" in table
    assert "Care" in capsys.readouterr().out


def test_dataclass_config_is_recorded(tiny_llama):
    res = evaluate(tiny_llama, load_dataset("own", limit=1), EvalConfig(protocol="json-bool"))
    assert res.config == dataclasses.asdict(EvalConfig(protocol="json-bool"))
    assert res.seconds > 0 and res.rows[0]["condition"] in ("other_violate", "self_violate")
