"""Steered vs plain batched generation: tokens/s at the same batch size, same run.

Plain is `model.generate` with no hooks at all; steered is the same call inside our steering
context (a vector on the default middle layers). Both decode greedily with a fixed number of
new tokens (min_new_tokens = max_new_tokens) so they do identical work apart from the hooks.
"""

from __future__ import annotations

import torch

from steerheal import data
from steerheal.chat import encode, render_prompt
from steerheal.steering import SteeringVector, SteerSpec, default_layers, steering

from .common import interleaved_medians, table


def run(lm, batch_sizes=(1, 8, 32), new_tokens=64, repeats=3) -> tuple[str, list[dict]]:
    g = torch.Generator().manual_seed(0)
    vec = SteeringVector(directions={k: torch.randn(lm.d_model, generator=g)
                                     for k in default_layers(lm.n_layers)},
                         model_spec=lm.spec, model_revision=lm.revision)
    spec = [SteerSpec(vec, 0.5)]
    prompts = data.heldout_prompts()
    rows = []
    for bs in batch_sizes:
        texts = [render_prompt(lm.tokenizer, prompts[i % len(prompts)]) for i in range(bs)]
        batch = encode(lm.tokenizer, texts, 1024, lm.device)
        kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                      max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                      pad_token_id=lm.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)

        @torch.no_grad()
        def plain(kwargs=kwargs):
            lm.model.generate(**kwargs)

        @torch.no_grad()
        def steered(kwargs=kwargs, prompt_len=batch.prompt_len):
            with steering(lm, spec, prompt_len=prompt_len):
                lm.model.generate(**kwargs)

        t = interleaved_medians({"plain": plain, "steered": steered}, repeats)
        tok = bs * new_tokens
        rows.append({"batch": bs, "plain_tok_s": tok / t["plain"], "steered_tok_s": tok / t["steered"],
                     "ratio": t["plain"] / t["steered"]})
    text = table(["batch", "plain tok/s", "steered tok/s", "steered / plain (target >= 0.95)"],
                 [[r["batch"], f"{r['plain_tok_s']:.1f}", f"{r['steered_tok_s']:.1f}", f"{r['ratio']:.3f}"]
                  for r in rows])
    return text, rows
