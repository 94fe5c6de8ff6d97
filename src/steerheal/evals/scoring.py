"""Batched log-probability readout of answer candidates, with a shared prompt prefix.

`score_candidates(lm, texts, candidates)` returns log p(candidate | text) for every text and
candidate string, where each text ends at the answer slot (after the answer prefill).

- Candidates are scored by the full log-probability of their token sequence, never by the
  first token only. Each candidate's tokens are found by tokenising text + candidate and
  checking that the text's own tokens are an exact prefix; if a candidate merges into the
  prefill (the boundary moves) that is an error, not a silent mis-read.
- All texts of one call usually share a long token prefix (instructions, option list). It is
  computed once per batch and its KV cache repeated over the batch; only the suffixes
  (vignette, question, prefill, candidate) are run per row.
- Suffixes are left-padded after the prefix with explicit position ids, so every row's
  answer slot sits at the same index and results do not depend on batch composition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import SteerhealError
from ..models import LoadedModel
from ..progress import progress
from ..steering.hooks import SteerSpec, steering


def candidate_token_ids(tokenizer, texts: Sequence[str], candidates: Sequence[str]) -> list[list[int]]:
    """Token ids of each candidate after the answer slot; the same for every text, or an error."""
    text_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    joined = tokenizer([t + c for t in texts for c in candidates], add_special_tokens=False)["input_ids"]
    result: list[list[int]] = []
    for j, cand in enumerate(candidates):
        seen = None
        for i, base in enumerate(text_ids):
            full = joined[i * len(candidates) + j]
            if full[: len(base)] != base or len(full) == len(base):
                raise SteerhealError(
                    f"answer label {cand!r} tokenises ambiguously after the prompt's answer prefill "
                    f"(it merges with the preceding text in prompt {i})",
                    "change the prefill or the label so the prefill ends on a token boundary",
                )
            ids = full[len(base):]
            if seen is not None and ids != seen:
                raise SteerhealError(f"answer label {cand!r} tokenises differently across prompts",
                                     "end every prompt with the same answer prefill")
            seen = ids
        result.append(seen or [])
    return result


def _common_prefix_len(rows: list[list[int]]) -> int:
    width = min(len(r) for r in rows)
    mat = torch.tensor([r[:width] for r in rows])
    same = (mat == mat[0]).all(dim=0)
    differs = (~same).nonzero()
    common = int(differs[0]) if len(differs) else width
    return max(0, min(common, width - 1))  # keep at least one token per row in the suffix


@torch.no_grad()
def _score_batch(lm: LoadedModel, prefix: list[int], suffixes: list[list[int]], keep: int) -> torch.Tensor:
    """Log-softmax (fp32) at the last `keep` positions of each row: [B, keep, V]."""
    dev = lm.device
    B = len(suffixes)
    width = max(len(s) for s in suffixes)
    ids = torch.full((B, width), lm.tokenizer.pad_token_id, dtype=torch.long)
    smask = torch.zeros((B, width), dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, width - len(s):] = torch.tensor(s)
        smask[i, width - len(s):] = 1
    ids, smask = ids.to(dev), smask.to(dev)
    kwargs = {}
    P = len(prefix)
    if P:
        out = lm.model(input_ids=torch.tensor([prefix], device=dev), use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(B)
        kwargs["past_key_values"] = cache
    mask = torch.cat([torch.ones((B, P), dtype=torch.long, device=dev), smask], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, P:]
    logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=bool(P),
                      logits_to_keep=keep, **kwargs).logits
    return torch.log_softmax(logits.float(), dim=-1)


def score_candidates(lm: LoadedModel, texts: Sequence[str], candidates: Sequence[str], *, batch_size: int = 16,
                     steer: Sequence[SteerSpec] = (), desc: str | None = None) -> torch.Tensor:
    """log p(candidate | text) for each text (rows) and candidate (columns), fp32 on CPU."""
    if not texts:
        raise SteerhealError("nothing to score", "pass at least one prompt")
    cand_ids = candidate_token_ids(lm.tokenizer, texts, candidates)
    rows = lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    limit = lm.max_positions - max(len(c) for c in cand_ids)
    too_long = [i for i, r in enumerate(rows) if len(r) > limit]
    if too_long:
        raise SteerhealError(f"prompt {too_long[0]} is longer than the model's context ({limit} tokens)",
                             "shorten the template or the vignette text")
    common = _common_prefix_len(rows)
    prefix = rows[0][:common]
    single = all(len(c) == 1 for c in cand_ids)
    out = torch.empty(len(texts), len(candidates))
    first = torch.tensor([c[0] for c in cand_ids]) if single else None
    # Multi-token candidates: one row per (text, candidate); single-token: one row per text.
    jobs = [(i, None) for i in range(len(texts))] if single else \
        [(i, j) for i in range(len(texts)) for j in range(len(candidates))]
    starts = range(0, len(jobs), batch_size)
    with steering(lm, steer):
        for s in progress(starts, desc=desc, total=len(starts)):
            chunk = jobs[s:s + batch_size]
            if single:
                # Gather the candidates on the model's device: only [B, C] crosses to the CPU, not [B, V].
                logp = _score_batch(lm, prefix, [rows[i][common:] for i, _ in chunk], 1)[:, -1]
                out[[i for i, _ in chunk]] = logp[:, first.to(logp.device)].cpu()
                continue
            suffixes = [rows[i][common:] + cand_ids[j] for i, j in chunk]
            keep = max(len(cand_ids[j]) for _, j in chunk) + 1
            logp = _score_batch(lm, prefix, suffixes, keep)  # [B, keep, V]
            sums = []
            for b, (_, j) in enumerate(chunk):
                c = torch.tensor(cand_ids[j], device=logp.device)
                span = logp[b, keep - 1 - len(c): keep - 1]  # positions that predict the candidate
                sums.append(span.gather(1, c.view(-1, 1)).sum())
            for (i, j), value in zip(chunk, torch.stack(sums).cpu(), strict=True):
                out[i, j] = value
    return out
