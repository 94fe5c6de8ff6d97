import torch

from steerheal.config import GenerateConfig
from steerheal.generate import first_stop, generate
from steerheal.steering import SteeringVector, SteerSpec

PROMPTS = ["hi", "What is the capital of France?", "tell me about dragons"]


def test_sampling_is_repeatable_with_a_seed_and_varies_without(tiny_llama):
    cfg = GenerateConfig(max_new_tokens=16, seed=7, temperature=1.0)
    a = generate(tiny_llama, PROMPTS, n=2, config=cfg)
    b = generate(tiny_llama, PROMPTS, n=2, config=cfg)
    c = generate(tiny_llama, PROMPTS, n=2, config=GenerateConfig(max_new_tokens=16, seed=8, temperature=1.0))
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_records_are_prompt_major_with_sample_index_and_coefficient(tiny_llama):
    v = SteeringVector(directions={2: torch.ones(64)}, model_spec=tiny_llama.spec,
                       model_revision=tiny_llama.revision)
    recs = generate(tiny_llama, PROMPTS, n=3, steer=[SteerSpec(v, 2.5)],
                    config=GenerateConfig(max_new_tokens=8, batch_size=4))
    assert [(r.prompt, r.sample) for r in recs] == [(p, k) for p in PROMPTS for k in range(3)]
    assert all(r.coeff == 2.5 and len(r.token_ids) <= 8 for r in recs)
    assert recs[0].to_dict()["completion"] == recs[0].completion


def test_greedy_generation_does_not_depend_on_batch_size(tiny_llama):
    cfg1 = GenerateConfig(max_new_tokens=12, do_sample=False, batch_size=1)
    cfg3 = GenerateConfig(max_new_tokens=12, do_sample=False, batch_size=3)
    assert [r.token_ids for r in generate(tiny_llama, PROMPTS, config=cfg1)] == \
           [r.token_ids for r in generate(tiny_llama, PROMPTS, config=cfg3)]


def test_steering_changes_the_generated_tokens(tiny_llama):
    g = torch.Generator().manual_seed(0)
    v = SteeringVector(directions={1: 20 * torch.randn(64, generator=g)}, model_spec=tiny_llama.spec,
                       model_revision=tiny_llama.revision)
    cfg = GenerateConfig(max_new_tokens=12, do_sample=False)
    plain = generate(tiny_llama, PROMPTS, config=cfg)
    steered = generate(tiny_llama, PROMPTS, steer=[SteerSpec(v, 1.0)], config=cfg)
    assert [r.token_ids for r in plain] != [r.token_ids for r in steered]


def test_first_stop_cuts_at_the_first_stop_token():
    toks = torch.tensor([[5, 9, 2, 9], [1, 1, 1, 1], [9, 0, 0, 0]])
    ends, found = first_stop(toks, [9])
    assert ends.tolist() == [1, 4, 0]
    assert found.tolist() == [True, False, True]
