import json

import pytest
import torch

from steerheal.config import DiscoverConfig, ScoreConfig
from steerheal.discover.divergence import direction_of, mean_write, train_writes
from steerheal.discover.judge import EndpointJudge, local_judge
from steerheal.discover.melbo import melbo
from steerheal.discover.pipeline import load_search, score_dir, search, summary_table
from steerheal.discover.prompts import load_prompts
from steerheal.discover.score import check_direction, matched_similarity, random_like
from steerheal.discover.writes import BlockWrites
from steerheal.errors import SteerhealError
from steerheal.steering.vector import SteeringVector

PROMPTS = ["Anna: I never told you this, but", "Dear diary, today I finally", "Tom: You always say that.\nMia:",
           "The argument started when", "Ben: Be honest with me.\nSara:", "I keep thinking about the day"]


def test_divergence_training_raises_kl_while_own_nll_stays_bounded(tiny_llama):
    cfg = DiscoverConfig(steps=30, batch_size=6, sample_tokens=12, lr=0.05, prompt_frac=1.0, kl_stop=None)
    _, trace = train_writes(tiny_llama, PROMPTS, cfg, seed=0)
    early, late = sum(trace.kl[:5]) / 5, sum(trace.kl[-5:]) / 5
    assert late > early * 3 and late > 0.02, trace.kl
    assert max(trace.nll) < 2 * torch.log(torch.tensor(float(tiny_llama.tokenizer.vocab_size))).item()
    assert all(p.grad is None for p in tiny_llama.model.parameters())
    assert trace.stopped_at is None and len(trace.kl) == 30


def test_divergence_search_stops_at_its_kl_budget(tiny_llama):
    cfg = DiscoverConfig(steps=30, batch_size=6, sample_tokens=12, lr=0.05, prompt_frac=1.0, kl_stop=0.02)
    _, trace = train_writes(tiny_llama, PROMPTS, cfg, seed=0)
    assert trace.stopped_at is not None and len(trace.kl) == trace.stopped_at + 1 < 30, trace.kl
    assert trace.kl[-1] >= 0.02 and all(k < 0.02 for k in trace.kl[:-1])


def test_mean_write_direction_is_the_average_write_on_base_activations(tiny_llama):
    writes = BlockWrites(tiny_llama.d_model, [1, 2], rank=2, seed=3)
    with torch.no_grad():
        writes.B.mul_(100)
    v = direction_of(tiny_llama, writes, PROMPTS[:2], seed=3)
    one = mean_write(tiny_llama, writes, PROMPTS[:1], batch_size=1)
    two = mean_write(tiny_llama, writes, PROMPTS[1:2], batch_size=1)
    assert v.layers == [1, 2] and float(v.directions[1].norm()) > 0
    n1 = len(tiny_llama.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]) - 1
    n2 = len(tiny_llama.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"]) - 1
    torch.testing.assert_close(v.directions[1], (n1 * one[1] + n2 * two[1]) / (n1 + n2), rtol=1e-4, atol=1e-6)


def test_melbo_vectors_have_the_fixed_norm_and_are_mutually_orthogonal(tiny_llama):
    cfg = DiscoverConfig(method="melbo", n=3, melbo_steps=5, source=1, target=3)
    vectors, traces = melbo(tiny_llama, PROMPTS, cfg)
    vs = torch.stack([v.directions[1] for v in vectors])
    radius = vectors[0].extra["radius"]
    torch.testing.assert_close(vs.norm(dim=1), torch.full((3,), radius), rtol=1e-5, atol=1e-5)
    gram = (vs @ vs.T) / radius**2
    assert float((gram - torch.eye(3)).abs().max()) < 1e-5
    assert all(len(t) == 5 for t in traces) and traces[0][-1] > traces[0][0]


def test_linearity_of_a_direction_against_itself_is_one_and_beats_the_null():
    gen = torch.Generator().manual_seed(0)
    desc = torch.randn(4, 16, generator=gen)
    assert matched_similarity(desc, desc) == pytest.approx(1.0)
    assert matched_similarity(desc, desc[[2, 0, 3, 1]]) == pytest.approx(1.0)  # matching ignores order
    close = desc + 0.3 * torch.randn(4, 16, generator=gen)
    null = torch.randn(4, 16, generator=gen)
    assert matched_similarity(desc, close) > 0.8 > matched_similarity(desc, null)


def test_random_null_matches_per_layer_norms():
    v = SteeringVector({1: torch.ones(8) * 3, 2: torch.arange(8.0)})
    r = random_like(v, seed=1)
    for k in v.layers:
        assert float(r.directions[k].norm()) == pytest.approx(float(v.directions[k].norm()))
        assert abs(float(torch.nn.functional.cosine_similarity(r.directions[k], v.directions[k], dim=0))) < 0.99


def test_zero_norm_direction_is_a_clear_error():
    with pytest.raises(SteerhealError, match="zero norm"):
        check_direction(SteeringVector({1: torch.zeros(8)}), "d00")


def test_local_judge_embeds_and_an_unreachable_endpoint_is_one_clear_error():
    judge = local_judge()
    emb = judge.embed(["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply."])
    assert emb.shape == (3, 384)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])
    with pytest.raises(SteerhealError, match="judge endpoint .* failed"):
        EndpointJudge("http://127.0.0.1:9", timeout=2).describe(["a"], ["b"])


def test_search_then_score_writes_a_catalogue(tmp_path, tiny_llama):
    out = tmp_path / "disc"
    record = search(tiny_llama, DiscoverConfig(n=2, steps=3, batch_size=4, sample_tokens=8), out, log=lambda *_: None)
    assert [s["direction"] for s in record["searches"]] == ["directions/d00.safetensors", "directions/d01.safetensors"]
    assert SteeringVector.load(out / "directions" / "d00.safetensors").layers == list(range(tiny_llama.n_layers))
    cfg = ScoreConfig(n_eval=4, groups=2, new_tokens=6, coeffs=(-1.0, 0.0, 1.0), samples=2)
    catalogue = score_dir(tiny_llama, out, cfg, log=lambda *_: None)
    assert len(catalogue["directions"]) == 2
    for entry in catalogue["directions"]:
        assert -1.0 <= entry["linearity"] <= 1.0 and entry["null_shuffled"] is not None
        assert [r["coeff"] for r in entry["dose"]["rows"]] == [-1.0, 0.0, 1.0]
    assert json.loads((out / "catalogue.json").read_text())["model"] == "tiny-random-llama"
    assert "coefficient -1.0" in (out / "catalogue.html").read_text()
    assert "d01" in summary_table(catalogue)
    with pytest.raises(SteerhealError, match="already holds a search"):
        search(tiny_llama, DiscoverConfig(n=1, steps=1), out)


def test_a_catalogue_from_another_model_is_refused(tmp_path, tiny_llama, tiny_gemma):
    out = tmp_path / "disc"
    search(tiny_llama, DiscoverConfig(method="melbo", n=1, melbo_steps=1), out, log=lambda *_: None)
    with pytest.raises(SteerhealError, match="was searched on tiny-random-llama"):
        load_search(out, tiny_gemma)


def test_shipped_prompts_have_disjoint_train_and_test_splits():
    train, test = load_prompts("train"), load_prompts("test")
    assert len(train) >= 48 and len(test) >= 24 and not set(train) & set(test)
