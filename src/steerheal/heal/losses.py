"""The heal loss (DESIGN.md section 5), as small pure functions.

    loss = NLL(x | p; student) + lam_r * relu(D - tau) + spectral_lam * mean_l sigma_max(dW_l)
    lam_r = lam * (1 + r) ** lam_round_pow            r = rounds already baked
    D = mean over sequences of agg_t KL_t             agg in {mean, rmse, p95, max}

KL_t is computed in fp32 at completion positions only, in chunks of positions, so memory
never grows as batch x length x vocab in low precision. Aggregating per sequence first keeps
D independent of the batch size and lets one incoherent spike dominate its own sequence.
"""

from __future__ import annotations

import torch

AGGREGATORS = ("mean", "rmse", "p95", "max")
DIVERGENCES = ("kl_rev", "kl_fwd")


def kl_from_logprobs(ls: torch.Tensor, lr: torch.Tensor, kind: str) -> torch.Tensor:
    """KL per row from student and reference log-probabilities (fp32): rev = KL(s || r), fwd = KL(r || s)."""
    if kind == "kl_rev":
        return (ls.exp() * (ls - lr)).sum(-1)
    if kind == "kl_fwd":
        return (lr.exp() * (lr - ls)).sum(-1)
    raise ValueError(f"unknown divergence {kind!r}")


def token_kl(student_logits: torch.Tensor, ref_logits: torch.Tensor, kind: str = "kl_rev",
             chunk: int = 256) -> torch.Tensor:
    """Per-row KL over the vocabulary for [N, V] logits, in fp32, `chunk` rows at a time.

    kl_rev = KL(student || ref) (mode-seeking), kl_fwd = KL(ref || student).
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}")
    out = []
    for s in range(0, student_logits.shape[0], chunk):
        ls = torch.log_softmax(student_logits[s:s + chunk].float(), dim=-1)
        lr = torch.log_softmax(ref_logits[s:s + chunk].float(), dim=-1)
        out.append(kl_from_logprobs(ls, lr, kind))
    return torch.cat(out) if out else student_logits.new_zeros(0, dtype=torch.float32)


def aggregate(values: torch.Tensor, seq_index: torch.Tensor, n_seqs: int, agg: str) -> torch.Tensor:
    """Aggregate per-position values into one number per sequence ([n_seqs]).

    `seq_index[k]` is the sequence of position k. p95 uses linear interpolation (as
    torch.quantile), computed on a padded [n_seqs, max_len] matrix (no loop over positions).
    """
    if agg not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {agg!r}")
    counts = torch.bincount(seq_index, minlength=n_seqs).clamp(min=1).to(values.dtype)
    if agg == "mean":
        return torch.zeros(n_seqs, dtype=values.dtype, device=values.device).index_add(0, seq_index, values) / counts
    if agg == "rmse":
        sq = torch.zeros(n_seqs, dtype=values.dtype, device=values.device).index_add(0, seq_index, values**2)
        return (sq / counts).clamp(min=0).sqrt()
    # p95 / max on a padded matrix: position k goes to column (k - start of its sequence).
    order = torch.argsort(seq_index, stable=True)
    idx, vals = seq_index[order], values[order]
    starts = torch.cumsum(torch.bincount(idx, minlength=n_seqs), 0) - torch.bincount(idx, minlength=n_seqs)
    cols = torch.arange(len(idx), device=idx.device) - starts[idx]
    width = int(cols.max()) + 1 if len(cols) else 1
    mat = torch.full((n_seqs, width), float("nan"), dtype=values.dtype, device=values.device)
    mat = mat.index_put((idx, cols), vals)
    if agg == "max":
        return torch.nan_to_num(mat, nan=float("-inf")).amax(dim=1).clamp(min=0)
    return torch.nanquantile(mat, 0.95, dim=1)


def round_lambda(lam: float, rounds_baked: int, power: float) -> float:
    return lam * (1 + rounds_baked) ** power


def barrier(d: torch.Tensor, tau: float, lam_r: float) -> torch.Tensor:
    """lam_r * relu(D - tau): zero until the divergence exceeds tau."""
    return lam_r * torch.relu(d - tau)


def lora_sigma_max(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """Largest singular value of scaling * B @ A, differentiable, finite also at B = 0.

    The top singular vectors come from an r x r SVD of the QR cores (B = Qb Rb, A^T = Qa Ra,
    BA = Qb (Rb Ra^T) Qa^T) without gradients; sigma = u^T B A v then carries the gradient
    u v^T, which stays finite where the singular values are degenerate (a fresh B = 0).
    """
    a, b = lora_a.float(), lora_b.float()
    with torch.no_grad():
        qb, rb = torch.linalg.qr(b)
        qa, ra = torch.linalg.qr(a.T)
        uc, _, vch = torch.linalg.svd(rb @ ra.T)
        u, v = qb @ uc[:, 0], qa @ vch[0]
    return scaling * (u @ (b @ (a @ v)))
