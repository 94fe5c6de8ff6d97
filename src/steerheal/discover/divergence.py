"""Divergence search: train a low-rank write so the model moves away from base, confidently.

Each step samples a fresh on-policy batch y ~ Q (the model with the writes on) from the
search's prompts, then teacher-forces it with the writes off (P, no grad) and on (Q):

    loss = alpha * -KL(P || Q) + beta * NLL(Q, y)

averaged over generated positions. -KL alone collapses Q into flat noise; the NLL of Q's own
samples keeps it confident (seed 001: alpha 1.1, beta 0.3). The direction of a trained write
is its mean over base activations at each block (`mean_write`): steering with that vector at
coefficient 1 adds, at every block, what the write adds on average.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..chat import encode, non_sink_mask
from ..config import DiscoverConfig
from ..generate import first_stop, stop_token_ids
from ..models import LoadedModel, frozen_parameters
from ..progress import progress
from ..steering.hooks import SteerSpec, steering
from ..steering.vector import SteeringVector
from .prompts import raw_text
from .writes import BlockWrites


@dataclass
class SearchTrace:
    seed: int
    n_prompts: int
    kl: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    stopped_at: int | None = None  # the step whose KL reached kl_stop (its update is not applied)


def _sample(lm: LoadedModel, writes: BlockWrites | None, texts: Sequence[str], n_tokens: int,
            temperature: float = 1.0, steer: Sequence[SteerSpec] = ()):
    batch = encode(lm.tokenizer, list(texts), lm.max_positions - n_tokens, lm.device)
    stops = stop_token_ids(lm)
    on = writes.active(lm, non_sink_mask(batch.attention_mask)) if writes is not None else nullcontext()
    with torch.no_grad(), on, steering(lm, steer):
        seqs = lm.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=True,
                                 temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=n_tokens,
                                 pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=stops)
    P = batch.prompt_len
    new = seqs[:, P:]
    end, found = first_stop(new.cpu(), stops)
    valid = torch.arange(new.shape[1]).unsqueeze(0) <= torch.where(found, end, end - 1).unsqueeze(1)
    mask = torch.cat([batch.attention_mask.cpu(), valid.long()], dim=1).to(lm.device)
    return seqs, mask, P, valid.to(lm.device)


def sample_texts(lm: LoadedModel, texts: Sequence[str], n_tokens: int, seed: int, *,
                 writes: BlockWrites | None = None, steer: Sequence[SteerSpec] = (), batch_size: int = 16,
                 temperature: float = 0.7) -> list[str]:
    """Sampled continuations (decoded, cut at the first stop), batch b seeded with seed + b: the
    base, adapter and direction runs of one prompt set share their random streams."""
    out = []
    for b, start in enumerate(range(0, len(texts), batch_size)):
        torch.manual_seed(seed + b)
        seqs, _, P, valid = _sample(lm, writes, texts[start:start + batch_size], n_tokens, temperature, steer)
        for row, keep in zip(seqs[:, P:].tolist(), valid.tolist(), strict=True):
            out.append(lm.tokenizer.decode([t for t, k in zip(row, keep, strict=True) if k], skip_special_tokens=True))
    return out


def divergence_step(lm: LoadedModel, writes: BlockWrites, texts: Sequence[str], cfg: DiscoverConfig):
    """(loss, mean KL(P||Q), mean NLL) on one fresh on-policy batch; the loss keeps its graph."""
    seqs, mask, P, valid = _sample(lm, writes, texts, cfg.sample_tokens)
    inputs = {"input_ids": seqs, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
              "use_cache": False, "logits_to_keep": seqs.shape[1] - P + 1}
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(**inputs).logits[:, :-1].float(), -1)
    with writes.active(lm, non_sink_mask(mask)):
        logq = torch.log_softmax(lm.model(**inputs).logits[:, :-1].float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)[valid]
    nll = -logq.gather(-1, seqs[:, P:].unsqueeze(-1)).squeeze(-1)[valid]
    loss = cfg.alpha * -kl.mean() + cfg.beta * nll.mean()
    return loss, float(kl.detach().mean()), float(nll.detach().mean())


def train_writes(lm: LoadedModel, prompts: Sequence[str], cfg: DiscoverConfig, seed: int,
                 layers: list[int] | None = None) -> tuple[BlockWrites, SearchTrace]:
    """One independent search: its own seed, init and random prompt subset."""
    rng = random.Random(seed)
    subset = rng.sample(list(prompts), max(1, round(cfg.prompt_frac * len(prompts))))
    texts = [raw_text(lm.tokenizer, p) for p in subset]
    writes = BlockWrites(lm.d_model, layers or list(range(lm.n_layers)), cfg.rank, cfg.shared, seed).to(lm.device)
    opt = torch.optim.AdamW(writes.parameters(), lr=cfg.lr, weight_decay=0.0)
    trace = SearchTrace(seed, len(subset))
    torch.manual_seed(seed)
    with frozen_parameters(lm.model):
        for step in progress(range(cfg.steps), desc=f"divergence search {seed}", total=cfg.steps):
            batch = rng.sample(texts, min(cfg.batch_size, len(texts)))
            with torch.enable_grad():
                loss, kl, nll = divergence_step(lm, writes, batch, cfg)
            trace.kl.append(kl)
            trace.nll.append(nll)
            trace.loss.append(float(loss.detach()))
            if cfg.kl_stop is not None and kl >= cfg.kl_stop:  # the budget is spent: keep these writes
                trace.stopped_at = step
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    return writes, trace


@torch.no_grad()
def mean_write(lm: LoadedModel, writes: BlockWrites, texts: Sequence[str], batch_size: int = 8,
               propagated: bool = False) -> dict[int, torch.Tensor]:
    """Per adapted block: mean over base activations of the write (or, `propagated`, the mean
    difference of block outputs with the writes on and off)."""
    sums = {layer: torch.zeros(lm.d_model) for layer in writes.layers}
    count = 0
    for start in range(0, len(texts), batch_size):
        batch = encode(lm.tokenizer, list(texts[start:start + batch_size]), lm.max_positions, lm.device)
        keep = non_sink_mask(batch.attention_mask)
        base = _capture(lm, writes.layers, batch)
        if propagated:
            with writes.active(lm, keep):
                on = _capture(lm, writes.layers, batch)
            per_layer = {layer: on[layer] - base[layer] for layer in writes.layers}
        else:
            per_layer = {layer: writes.write(i, base[layer]) for i, layer in enumerate(writes.layers)}
        for layer, value in per_layer.items():
            sums[layer] += value.float()[keep].sum(0).cpu()
        count += int(keep.sum())
    return {layer: s / max(count, 1) for layer, s in sums.items()}


def _capture(lm: LoadedModel, layers: Sequence[int], batch) -> dict[int, torch.Tensor]:
    seen = {}

    def make(layer):
        def hook(_module, _inputs, output):
            seen[layer] = (output if isinstance(output, torch.Tensor) else output[0]).float()
        return hook

    handles = [lm.blocks[layer].register_forward_hook(make(layer)) for layer in layers]
    try:
        lm.model(**batch.model_inputs(), use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return seen


def direction_of(lm: LoadedModel, writes: BlockWrites, texts: Sequence[str], seed: int,
                 propagated: bool = False) -> SteeringVector:
    return SteeringVector(mean_write(lm, writes, texts, propagated=propagated), model_spec=lm.spec,
                          model_revision=lm.revision, d_model=lm.d_model, n_layers=lm.n_layers,
                          read_position="all_tokens_but_first",
                          method="divergence_propagated" if propagated else "divergence_mean_write",
                          extra={"search_seed": seed})
