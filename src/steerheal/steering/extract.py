"""Contrastive extraction: read the residual at the assistant tag under two personas.

For each context, the prompt is the chat-templated user message with the persona as system
prompt, ending at the assistant generation tag. We read every chosen block's output at that
last prompt token for `pos` and `neg` and combine:

- `mean_diff`: v_l = mean(h_pos) - mean(h_neg), stored raw.
- `pca`: first principal component of the centred paired differences h_pos - h_neg, sign
  aligned with the mean difference and scaled to the mean difference's projection on it.

The forward stops after the deepest read block (no later blocks, no logits): that block's
hook raises a private exception once it has what it needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..chat import pad_left, render_prompt, tokenize_rows
from ..config import ExtractConfig
from ..errors import SteerhealError
from ..models import LoadedModel, decoder_stack
from ..progress import progress
from .layers import parse_layers
from .vector import SteeringVector


class _StopForward(Exception):
    pass


def _block_hidden(output) -> torch.Tensor:
    # transformers 5.x blocks return a Tensor; older versions return a tuple.
    return output if isinstance(output, torch.Tensor) else output[0]


@torch.no_grad()
def read_activations(lm: LoadedModel, texts: Sequence[str], layers: Sequence[int],
                     batch_size: int = 16, max_length: int = 1024,
                     desc: str | None = None) -> dict[int, torch.Tensor]:
    """Block outputs at each text's last token: {layer: [n_texts, d_model] fp32, CPU}."""
    if not texts:
        raise SteerhealError("no prompts to read activations from", "pass at least one context")
    layers = sorted(set(layers))
    max_length = min(max_length, lm.max_positions)
    rows = tokenize_rows(lm.tokenizer, list(texts), max_length)  # tokenised once; over-long is an error
    order = sorted(range(len(texts)), key=lambda i: len(rows[i]))  # similar lengths pad less
    captured: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    blocks = lm.blocks

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            captured[layer].append(_block_hidden(output)[:, -1, :].float().cpu())
            if layer == layers[-1]:
                raise _StopForward
        return hook

    handles = [blocks[k].register_forward_hook(make_hook(k)) for k in layers]
    stack = decoder_stack(lm.model)
    try:
        for start in progress(range(0, len(order), batch_size), desc=desc,
                              total=(len(order) + batch_size - 1) // batch_size):
            idx = order[start:start + batch_size]
            batch = pad_left([rows[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
            try:
                stack(**batch.model_inputs(), use_cache=False)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {k: torch.cat(v)[inverse] for k, v in captured.items()}


def _combine(h_pos: torch.Tensor, h_neg: torch.Tensor, method: str) -> torch.Tensor:
    mean_diff = h_pos.mean(0) - h_neg.mean(0)
    if method == "mean_diff":
        return mean_diff
    diffs = h_pos - h_neg
    centred = diffs - diffs.mean(0, keepdim=True)
    if diffs.shape[0] < 2 or float(centred.abs().max()) == 0.0:
        return mean_diff  # no spread to take a component of: the mean difference is the answer
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    direction = vh[0].float()
    proj = float(diffs.mean(0) @ direction)
    if proj < 0:
        direction, proj = -direction, -proj
    return direction * proj


def extract(lm: LoadedModel, pos: str, neg: str, contexts: Sequence[str],
            config: ExtractConfig | None = None, *, progress_desc: str | None = None) -> SteeringVector:
    """A contrastive persona vector `pos - neg` read at the assistant tag over `contexts`."""
    config = config or ExtractConfig()
    if not pos.strip() or not neg.strip():
        raise SteerhealError("empty persona text", "give both --pos and --neg (or a --pair)")
    contexts = [c for c in contexts if c and c.strip()]
    if not contexts:
        raise SteerhealError("empty context list", "give at least one user message to extract over")
    layers = parse_layers(config.layers, lm.n_layers)
    texts = [render_prompt(lm.tokenizer, c, persona) for persona in (pos, neg) for c in contexts]
    acts = read_activations(lm, texts, layers, config.batch_size, config.max_length, progress_desc)
    n = len(contexts)
    directions = {k: _combine(a[:n], a[n:], config.method) for k, a in acts.items()}
    return SteeringVector(
        directions=directions, model_spec=lm.spec, model_revision=lm.revision, d_model=lm.d_model,
        n_layers=lm.n_layers, method=config.method, pos=pos, neg=neg, n_contexts=n,
        extra={"residual_norm": {k: float(a.norm(dim=-1).mean()) for k, a in acts.items()}},
    )
