"""Train one heal round: a fresh LoRA on kept completions, NLL + a divergence barrier.

The student forward runs the decoder stack (with every active adapter) to hidden states and
applies the LM head only at completion positions; the reference forward is the same model
under `AdapterHistory.reference(...)`, without gradients. Per-token NLL and KL are computed
in fp32 in chunks of positions with activation checkpointing, so the fp32 vocab-sized
intermediates of only one chunk are alive at a time.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

from .. import faults
from ..config import HealConfig
from ..errors import SteerhealError
from ..models import decoder_stack, unwrap
from ..progress import progress
from .adapters import AdapterHistory, LoraSpec
from .data import Batch, Example, collate
from .losses import aggregate, barrier, kl_from_logprobs, lora_sigma_max, round_lambda


@dataclass
class HealResult:
    adapter: str
    n_train: int
    n_val: int
    steps: list[dict] = field(default_factory=list)
    val: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _head(model, hidden: torch.Tensor) -> torch.Tensor:
    base = unwrap(model)
    logits = base.get_output_embeddings()(hidden)
    cap = getattr(getattr(base.config, "text_config", base.config), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def completion_logits(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at completion positions [N, V], their targets [N] and sequence index [N]."""
    hidden = decoder_stack(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                  position_ids=batch.position_ids, use_cache=False).last_hidden_state
    rows, cols = batch.target_mask.nonzero(as_tuple=True)
    targets = batch.input_ids[rows, cols + 1]
    # Under a device map the last block and the head may sit on other GPUs than the inputs.
    logits = _head(model, hidden[rows.to(hidden.device), cols.to(hidden.device)])
    return logits, targets.to(logits.device), rows.to(logits.device)


def _chunk_terms(student: torch.Tensor, ref: torch.Tensor | None, targets: torch.Tensor, kind: str):
    ls = torch.log_softmax(student.float(), dim=-1)  # shared by the NLL and the KL
    nll = -ls.gather(1, targets.view(-1, 1)).squeeze(1)
    if ref is None:
        return nll, torch.zeros_like(nll)
    return nll, kl_from_logprobs(ls, torch.log_softmax(ref.float(), dim=-1), kind)


def per_token_terms(student: torch.Tensor, ref: torch.Tensor | None, targets: torch.Tensor, kind: str,
                    chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL and KL in fp32, `chunk` positions at a time, recomputed in backward."""
    nlls, kls = [], []
    for s in range(0, student.shape[0], chunk):
        args = (student[s:s + chunk], None if ref is None else ref[s:s + chunk], targets[s:s + chunk], kind)
        if torch.is_grad_enabled() and student.requires_grad:
            nll, kl = checkpoint(_chunk_terms, *args, use_reentrant=False)
        else:
            nll, kl = _chunk_terms(*args)
        nlls.append(nll)
        kls.append(kl)
    return torch.cat(nlls), torch.cat(kls)


def heal_loss(history: AdapterHistory, batch: Batch, cfg: HealConfig, rounds_baked: int) -> dict:
    """All loss terms for one batch; `loss` carries the gradient."""
    model = history.peft_model
    student, targets, seq = completion_logits(model, batch)
    ref = None
    if cfg.reg != "nll":
        with torch.no_grad(), history.reference(cfg.barrier_ref):
            ref, _, _ = completion_logits(model, batch)
    nll_t, kl_t = per_token_terms(student, ref, targets, cfg.reg if cfg.reg != "nll" else "kl_rev", cfg.kl_chunk)
    n_seqs = batch.input_ids.shape[0]
    nll = aggregate(nll_t, seq, n_seqs, "mean").mean()
    d = aggregate(kl_t, seq, n_seqs, cfg.agg).mean() if cfg.reg != "nll" else nll.new_zeros(())
    lam_r = round_lambda(cfg.lam, rounds_baked, cfg.lam_round_pow)
    bar = barrier(d, cfg.tau, lam_r) if cfg.reg != "nll" else nll.new_zeros(())
    spec = nll.new_zeros(())
    if cfg.spectral_lam > 0:
        sig = [lora_sigma_max(a, b, s) for a, b, s in history.lora_factors(history.current)]
        spec = cfg.spectral_lam * torch.stack([x.to(nll.device) for x in sig]).mean()
    if faults.active("nan_loss"):  # test hook: the path a diverged run takes
        nll = nll * float("nan")
    return {"loss": nll + bar + spec, "nll": nll, "D": d, "barrier": bar, "spectral": spec,
            "active": bool(bar.detach() > 0), "lam_r": lam_r}


def _grad_norm(grads) -> float:
    return math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None))


def train_step(history: AdapterHistory, batch: Batch, cfg: HealConfig, rounds_baked: int,
               params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, split_grads: bool = True) -> dict:
    """One optimiser step. With `split_grads` (and an active barrier) the two terms' gradients
    are taken in separate backward passes so each norm can be logged; otherwise one backward."""
    terms = heal_loss(history, batch, cfg, rounds_baked)
    nll, d = float(terms["nll"].detach()), float(terms["D"].detach())
    if not torch.isfinite(terms["loss"]):
        raise SteerhealError(f"non-finite heal loss (nll {nll:.3g}, D {d:.3g})",
                             "lower lr or lam, or check the kept completions; earlier rounds are kept")
    g_bar = [None] * len(params)
    if split_grads or not terms["active"]:
        g_nll = torch.autograd.grad(terms["nll"] + terms["spectral"], params, retain_graph=terms["active"],
                                    allow_unused=True)
        if terms["active"]:
            g_bar = torch.autograd.grad(terms["barrier"], params, allow_unused=True)
    else:
        g_nll = torch.autograd.grad(terms["loss"], params, allow_unused=True)  # norms below are of the sum
    for p, a, c in zip(params, g_nll, g_bar, strict=True):
        p.grad = (a if a is not None else torch.zeros_like(p)) + (c if c is not None else 0)
    total = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else None
    opt.step()
    opt.zero_grad(set_to_none=True)
    split = split_grads or not terms["active"]
    return {"nll": nll, "D": d, "barrier": float(terms["barrier"].detach()), "active": terms["active"],
            "grad_norm_nll": _grad_norm(g_nll) if split else None,
            "grad_norm_barrier": _grad_norm(g_bar) if split else None,
            "grad_norm_total": float(total) if total is not None else None,
            "lr": opt.param_groups[0]["lr"], "lam_r": terms["lam_r"]}


def split(examples: list[Example], val_frac: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(round(val_frac * len(examples))) if len(examples) >= 5 else 0
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def heal_round(history: AdapterHistory, examples: list[Example], cfg: HealConfig, *, rounds_baked: int,
               desc: str | None = None, log=None) -> HealResult:
    """Add a fresh adapter to `history` and train it on `examples`."""
    if not examples:
        raise SteerhealError("no kept completions to heal on",
                             "loosen the filter gates or lower the dose (see the filter report)")
    torch.manual_seed(cfg.seed)
    train, val = split(examples, cfg.val_frac, cfg.seed)
    name = history.new_round(LoraSpec(rank=cfg.lora_rank, alpha=cfg.lora_alpha, layer_band=cfg.lora_band))
    params = history.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pad = history.lm.tokenizer.pad_token_id
    device = history.lm.device
    result = HealResult(adapter=name, n_train=len(train), n_val=len(val))
    t0 = time.perf_counter()
    model = history.peft_model
    model.train()
    rng = random.Random(cfg.seed)
    n_batches = math.ceil(len(train) / cfg.batch_size)
    step = 0
    try:
        for epoch in range(cfg.epochs):
            order = list(range(len(train)))
            rng.shuffle(order)
            for b in progress(range(n_batches), desc=desc and f"{desc} epoch {epoch + 1}", total=n_batches):
                batch = collate([train[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]], pad).to(device)
                log_norms = cfg.grad_norm_every > 0 and step % cfg.grad_norm_every == 0
                rec = train_step(history, batch, cfg, rounds_baked, params, opt, split_grads=log_norms)
                rec.update(step=step, epoch=epoch)
                result.steps.append(rec)
                faults.reached("heal_step")
                if log:
                    log(rec)
                step += 1
    finally:
        model.eval()
    result.val = evaluate_heal(history, val or train, cfg, rounds_baked)
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def evaluate_heal(history: AdapterHistory, examples: list[Example], cfg: HealConfig, rounds_baked: int) -> dict:
    """Mean NLL and D (same aggregator, both references) on held-out kept completions."""
    pad = history.lm.tokenizer.pad_token_id
    sums = {"nll": 0.0, "D": 0.0}
    n = 0
    kl_cfg = cfg if cfg.reg != "nll" else HealConfig(**{**asdict(cfg), "reg": "kl_rev"})
    for s in range(0, len(examples), cfg.batch_size):
        chunk = examples[s:s + cfg.batch_size]
        terms = heal_loss(history, collate(chunk, pad).to(history.lm.device), kl_cfg, rounds_baked)
        sums["nll"] += float(terms["nll"]) * len(chunk)
        sums["D"] += float(terms["D"]) * len(chunk)
        n += len(chunk)
    return {k: v / max(n, 1) for k, v in sums.items()} | {"n": n}
