"""Activation gradients of a correction loss, and per-row injection of vectors at a block.

Correction loss for an item: L = log p(wrong | prompt) - log p(right | prompt) (answers
teacher-forced, summed over their tokens). Lowering L moves probability from the wrong answer
to the right one. Its gradient is taken with respect to the output of block `layer` at the
positions that predict answer tokens (the last prompt token and all but the last answer
token), in both sequences, and averaged over those positions. `torch.autograd.grad` is used
so no parameter `.grad` is touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..answers import answer_ids
from ..chat import non_sink_mask, pad_left, render_question, tokenize_rows
from ..models import LoadedModel
from ..steering.layers import check_layer as check_block


def check_layer(lm: LoadedModel, layer: int) -> int:
    return check_block(lm.n_layers, layer, model=lm.spec)


def _hidden(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _replace(output, hidden):
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


@contextmanager
def injected(lm: LoadedModel, layer: int, vectors: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
    """Add vectors[b] to block `layer`'s output at every position where mask[b] is true."""
    def hook(_module, _inputs, output):
        h = _hidden(output)
        add = vectors.to(h.dtype).unsqueeze(1) * mask.to(h.dtype).unsqueeze(-1)
        return _replace(output, h + add)

    handle = lm.blocks[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _correction_batch(lm: LoadedModel, prompt: str, right: str, wrong: str):
    base = tokenize_rows(lm.tokenizer, [render_question(lm.tokenizer, prompt)], lm.max_positions)[0]
    ans = [answer_ids(lm, right), answer_ids(lm, wrong)]
    batch = pad_left([base + a for a in ans], lm.tokenizer.pad_token_id, lm.device)
    width = batch.input_ids.shape[1]
    # positions predicting each answer token: the last len(a) positions shifted left by one
    pred = torch.zeros(2, width, dtype=torch.bool)
    for r, a in enumerate(ans):
        pred[r, width - len(a) - 1: width - 1] = True
    return batch, ans, pred.to(lm.device)


def correction_loss(lm: LoadedModel, prompt: str, right: str, wrong: str, layer: int,
                    add: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, block output at `layer` [2, T, d], answer-position mask [2, T]); `add` [d] is added to
    that block output at the answer positions (for finite-difference checks)."""
    batch, ans, pred = _correction_batch(lm, prompt, right, wrong)
    captured = {}

    def hook(_module, _inputs, output):
        h = _hidden(output)
        if add is not None:
            h = h + add.to(h.dtype) * pred.to(h.dtype).unsqueeze(-1)
        captured["h"] = h
        return _replace(output, h)

    handle = lm.blocks[layer].register_forward_hook(hook)
    try:
        logits = lm.model(**batch.model_inputs(), use_cache=False).logits
    finally:
        handle.remove()
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = batch.input_ids[:, 1:]
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [2, T-1]: log p of token t+1 at t
    lp = (picked * pred[:, :-1].to(picked.dtype)).sum(-1)
    return lp[1] - lp[0], captured["h"], pred


def correction_gradient(lm: LoadedModel, prompt: str, right: str, wrong: str, layer: int) -> torch.Tensor:
    """Mean over answer positions of dL/dh at block `layer`, fp32 [d_model] on the CPU."""
    with torch.enable_grad():
        loss, h, pred = correction_loss(lm, prompt, right, wrong, layer)
        (grad,) = torch.autograd.grad(loss, h)
    return (grad.float() * pred.unsqueeze(-1)).sum((0, 1)).cpu() / pred.sum().cpu()


def gradients(lm: LoadedModel, items: Sequence, layer: int) -> torch.Tensor:
    """Correction gradients of every item: [n_items, d_model]."""
    return torch.stack([correction_gradient(lm, it.prompt, it.right, it.wrong, layer) for it in items])


@torch.no_grad()
def residual_norm(lm: LoadedModel, layer: int, texts: Sequence[str]) -> float:
    """Mean norm of block `layer`'s output over the real tokens of `texts` (first token excluded)."""
    batch = pad_left(tokenize_rows(lm.tokenizer, list(texts), lm.max_positions), lm.tokenizer.pad_token_id, lm.device)
    seen = {}

    def hook(_module, _inputs, output):
        seen["h"] = _hidden(output).float()

    handle = lm.blocks[layer].register_forward_hook(hook)
    try:
        lm.model(**batch.model_inputs(), use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    mask = non_sink_mask(batch.attention_mask)
    return float(seen["h"].norm(dim=-1)[mask].mean())
