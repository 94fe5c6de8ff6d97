import json

import pytest
import torch

from steerheal.config import IntrospectConfig
from steerheal.errors import SteerhealError
from steerheal.introspect import load_topics, run_introspect
from steerheal.introspect.experiment import conditions, score
from steerheal.introspect.gradients import check_layer, correction_gradient, correction_loss
from steerheal.introspect.topics import Item, Topic, TopicSet, check_topics


def small_topics() -> TopicSet:
    topics = (Topic("cats", "cat", ("tell me about fur",)), Topic("dogs", "dog", ("tell me about barks",)),
              Topic("fish", "fish", ("tell me about water",)))
    items = tuple(Item(t, f"question {t}{k}?", right, wrong) for t, pairs in
                  enumerate([[("ab", "cd"), ("ef", "gh")], [("ij", "kl"), ("mn", "op")], [("qr", "st"), ("uv", "wx")]])
                  for k, (right, wrong) in enumerate(pairs))
    return TopicSet("which one?", "pushed? yes or no", ("hello there", "nice day"), ("is ice hot?", "is up down?"),
                    topics, items)


def test_injected_gradient_equals_finite_difference(tiny_llama):
    layer = 2
    g = correction_gradient(tiny_llama, "what is it?", "ab", "cd", layer)
    _, _, pred = correction_loss(tiny_llama, "what is it?", "ab", "cd", layer)
    count = int(pred.sum())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = torch.randn(tiny_llama.d_model, generator=gen)
        eps = 1e-3
        with torch.no_grad():
            up = correction_loss(tiny_llama, "what is it?", "ab", "cd", layer, add=eps * u)[0]
            down = correction_loss(tiny_llama, "what is it?", "ab", "cd", layer, add=-eps * u)[0]
        finite = float(up - down) / (2 * eps)
        assert finite == pytest.approx(count * float(g @ u), rel=2e-2, abs=1e-4)


def test_gradient_leaves_parameter_grads_untouched(tiny_llama):
    correction_gradient(tiny_llama, "what is it?", "ab", "cd", 1)
    assert all(p.grad is None for p in tiny_llama.model.parameters())


def test_controls_are_norm_matched_and_partnered():
    ts = small_topics()
    inj = torch.randn(len(ts.items), 8, generator=torch.Generator().manual_seed(123))  # not the control's seed
    cond = conditions(ts, inj, -inj, seed=0)
    torch.testing.assert_close(cond["random"].norm(dim=1), inj.norm(dim=1))
    assert float(torch.nn.functional.cosine_similarity(cond["random"], inj).abs().max()) < 0.99
    torch.testing.assert_close(cond["negated"], -inj)
    assert float(cond["none"].abs().sum()) == 0
    # the other-topic control of item 0 (topic 0, first item) is item 2 (topic 1, first item)
    torch.testing.assert_close(cond["other topic"][0], inj[2])
    torch.testing.assert_close(cond["other topic"][4], inj[0])


def test_zero_injection_changes_nothing_and_a_vector_changes_scores(tiny_llama):
    prompts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>user\nhey you<|im_end|>\n"]
    plain = score(tiny_llama, 1, prompts, torch.zeros(2, tiny_llama.d_model), ["cat", "dog"], batch_size=4)
    again = score(tiny_llama, 1, prompts, torch.zeros(2, tiny_llama.d_model), ["cat", "dog"], batch_size=1)
    torch.testing.assert_close(plain, again, rtol=1e-4, atol=1e-4)
    pushed = score(tiny_llama, 1, prompts, torch.randn(2, tiny_llama.d_model) * 5, ["cat", "dog"], batch_size=4)
    assert float((pushed - plain).abs().max()) > 1e-3


@pytest.mark.parametrize("mode", ["raw", "virtual", "projector"])
def test_run_writes_a_table_with_every_control(tmp_path, tiny_llama, mode):
    cfg = IntrospectConfig(mode=mode, layer=2, projector_steps=3, target_kl=0.05)
    res = run_introspect(tiny_llama, small_topics(), cfg, tmp_path / mode, log=lambda *_: None)
    for name in ("gradient", "none", "random", "negated", "other topic", "decoupling"):
        assert name in res["table"]
        r = res["results"][name]["names_source"]
        assert 0 <= r["ci"][0] <= r["rate"] <= r["ci"][1] <= 1 and r["n"] == 6
    assert res["chance"] == pytest.approx(1 / 3)
    summary = json.loads((tmp_path / mode / "summary.json").read_text())
    assert summary["mode"] == mode and summary["layer"] == 2
    assert len(json.loads((tmp_path / mode / "trials.json").read_text())) == 6


def test_bad_layer_and_bad_targets_are_clear_errors(tiny_llama):
    with pytest.raises(SteerhealError, match="out of range"):
        check_layer(tiny_llama, tiny_llama.n_layers)
    ts = small_topics()
    broken = TopicSet(ts.question, ts.detect_question, ts.neutral_prompts, ts.no_questions, ts.topics,
                      ts.items + (Item(0, "same?", "zz", "zz"),))
    with pytest.raises(SteerhealError, match="no valid target tokenisation"):
        check_topics(tiny_llama, broken)
    twins = TopicSet(ts.question, ts.detect_question, ts.neutral_prompts, ts.no_questions,
                     (ts.topics[0], Topic("also cats", "cat", ("x",))), ts.items[:2])
    with pytest.raises(SteerhealError, match="tokenise identically"):
        check_topics(tiny_llama, twins)


def test_shipped_topics_have_valid_targets_on_the_embedded_model(smollm):
    ts = load_topics()
    assert len(ts.topics) >= 6 and all(sum(it.topic == t for it in ts.items) >= 3 for t in range(len(ts.topics)))
    check_topics(smollm, ts)
