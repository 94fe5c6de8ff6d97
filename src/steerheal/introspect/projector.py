"""The `projector` mode: a map from a unit correction gradient to the vector injected.

Trained (model frozen) so that, with P(g) injected while the model reads a neutral prompt and
the question, its next token names the gradient's topic: cross-entropy over the first tokens
of the topic labels of the training topics. Scored only on topics it never saw (folds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..answers import answer_ids
from ..chat import non_sink_mask, pad_left, tokenize_rows
from ..config import IntrospectConfig
from ..errors import SteerhealError
from ..models import LoadedModel, frozen_parameters
from .gradients import injected


def make_projector(kind: str, d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        net = nn.Linear(d, d)
        nn.init.normal_(net.weight, std=0.01 / d**0.5)
        nn.init.zeros_(net.bias)
        return net
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))


def first_label_tokens(lm: LoadedModel, labels: Sequence[str]) -> torch.Tensor:
    firsts = [answer_ids(lm, label)[0] for label in labels]
    if len(set(firsts)) != len(firsts):
        raise SteerhealError("two topic labels share their first token, so the projector cannot be trained on them",
                             "use labels whose first tokens differ")
    return torch.tensor(firsts)


def train_projector(lm: LoadedModel, layer: int, units: torch.Tensor, targets: torch.Tensor,
                    prompts: Sequence[str], labels: Sequence[str], cfg: IntrospectConfig) -> nn.Module:
    """`units` [n, d] unit descent directions, `targets` [n] label indices, `prompts` [n] rendered
    question prompts (neutral prompt + question) to train on."""
    proj = make_projector(cfg.projector, units.shape[1], cfg.seed).to(lm.device)
    opt = torch.optim.AdamW(proj.parameters(), lr=cfg.projector_lr, weight_decay=0.01)
    firsts = first_label_tokens(lm, labels).to(lm.device)
    rows = tokenize_rows(lm.tokenizer, list(prompts), lm.max_positions)
    gen = torch.Generator().manual_seed(cfg.seed)
    with frozen_parameters(lm.model), torch.enable_grad():
        for _ in range(cfg.projector_steps):
            idx = torch.randperm(len(rows), generator=gen)[: cfg.batch_size]
            batch = pad_left([rows[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
            vecs = proj(units[idx].to(lm.device))
            with injected(lm, layer, vecs, non_sink_mask(batch.attention_mask)):
                logits = lm.model(**batch.model_inputs(), use_cache=False, logits_to_keep=1).logits[:, -1]
            loss = nn.functional.cross_entropy(logits.float()[:, firsts], targets[idx].to(lm.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    proj.eval()
    return proj
