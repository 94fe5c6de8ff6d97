"""Batched extraction throughput: our early-stopped read vs a full forward, same run.

Both read the same block outputs at the assistant tag over the same prompts and batches; the
baseline runs every block and the LM head (`output_hidden_states=True`), as a library that
does not stop early would.
"""

from __future__ import annotations

import time

import torch

from steerheal import data
from steerheal.chat import encode, render_prompt
from steerheal.config import ExtractConfig
from steerheal.steering import extract, parse_layers

from .common import table


def _full_forward_extract(lm, pos, neg, contexts, batch_size):
    layers = parse_layers("mid", lm.n_layers)
    texts = [render_prompt(lm.tokenizer, c, p) for p in (pos, neg) for c in contexts]
    reads = {k: [] for k in layers}
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            batch = encode(lm.tokenizer, texts[s:s + batch_size], 1024, lm.device)
            hs = lm.model(**batch.model_inputs(), output_hidden_states=True).hidden_states
            for k in layers:
                reads[k].append(hs[k + 1][:, -1].float().cpu())
    n = len(contexts)
    return {k: torch.cat(v)[:n].mean(0) - torch.cat(v)[n:].mean(0) for k, v in reads.items()}


def run(lm, n_contexts=256, batch_size=16, repeats=1) -> tuple[str, dict]:
    pair = data.persona_pair("care-over-authority")
    ctx = (data.contexts() * (n_contexts // len(data.contexts()) + 1))[:n_contexts]
    cfg = ExtractConfig(batch_size=batch_size)
    extract(lm, pair.pos, pair.neg, ctx[:batch_size], cfg)  # warm-up
    ours, full = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        vec = extract(lm, pair.pos, pair.neg, ctx, cfg)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = _full_forward_extract(lm, pair.pos, pair.neg, ctx, batch_size)
        full.append(time.perf_counter() - t0)
    t_ours, t_full = sorted(ours)[len(ours) // 2], sorted(full)[len(full) // 2]
    cos = min(float(torch.nn.functional.cosine_similarity(vec.directions[k], ref[k], dim=0)) for k in ref)
    row = {"contexts": n_contexts, "prompts": 2 * n_contexts, "batch": batch_size,
           "ours_ctx_s": n_contexts / t_ours, "full_ctx_s": n_contexts / t_full, "ratio": t_full / t_ours,
           "min_cosine": cos}
    text = table(["contexts (x2 personas)", "batch", "ours ctx/s", "full-forward ctx/s", "speed-up",
                  "min cosine"],
                 [[n_contexts, batch_size, f"{row['ours_ctx_s']:.1f}", f"{row['full_ctx_s']:.1f}",
                   f"{row['ratio']:.2f}x", f"{cos:.6f}"]])
    return text, row
