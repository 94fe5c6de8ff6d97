"""Extraction against the peer libraries steering-vectors (0.12.x) and repeng (0.4.x).

Same model, same rendered prompts (persona in the system role, read at the last prompt
token, the assistant tag), same layers and batch size. Speed: contexts/s of our `extract`
(mean_diff) vs steering-vectors' `train_steering_vector` (mean aggregator) and repeng's
`read_representations` (pca_diff, which runs every block with `output_hidden_states`).
Agreement: cosine per layer between our mean_diff and steering-vectors' mean aggregator,
and |cosine| between our pca and repeng's pca_diff (both: first principal component of the
centred per-context differences), computed on an fp32 copy of the model so bf16 rounding of
different batch compositions does not hide a real difference.

Install them with `make bench-peers` (pip --no-deps: steering-vectors 0.12.2 declares
transformers<5 and repeng 0.4.0 numpy<2, neither holds here). repeng 0.4.0 uses the alias
`np.float_`, removed in NumPy 2, in a type annotation evaluated at import; we restore the
alias before importing it. steering-vectors pads on the tokenizer's side; we set right
padding for it so that positions match ours (left padding without position ids would shift
positions in transformers 5).
"""

from __future__ import annotations

import time

import torch

from steerheal import data
from steerheal.chat import render_prompt
from steerheal.config import ExtractConfig
from steerheal.models import load_model
from steerheal.steering import extract, parse_layers

from .common import table


def _import_peers():
    import numpy as np

    if not hasattr(np, "float_"):
        np.float_ = np.float64  # repeng 0.4.0 annotates with np.float_ (removed in NumPy 2)
    import repeng.extract
    import steering_vectors

    return steering_vectors, repeng.extract


def available() -> str | None:
    try:
        _import_peers()
    except ImportError as err:
        return f"peer libraries not installed ({err.name}); run `make bench-peers`"
    return None


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _peer_vectors(lm, pos_texts, neg_texts, layers, batch_size):
    sv, rp = _import_peers()
    side = lm.tokenizer.padding_side
    lm.tokenizer.padding_side = "right"
    try:
        t_sv, vec_sv = _timed(lambda: sv.train_steering_vector(
            lm.model, lm.tokenizer, [sv.SteeringVectorTrainingSample(p, n) for p, n in zip(pos_texts, neg_texts,
                                                                                          strict=True)],
            layers=layers, read_token_index=-1, batch_size=batch_size))
        t_rp, dirs_rp = _timed(lambda: rp.read_representations(
            lm.model, lm.tokenizer, [rp.DatasetEntry(p, n) for p, n in zip(pos_texts, neg_texts, strict=True)],
            hidden_layers=layers, batch_size=batch_size, method="pca_diff"))
    finally:
        lm.tokenizer.padding_side = side
    return (t_sv, {k: v.float().cpu() for k, v in vec_sv.layer_activations.items()}), \
        (t_rp, {k: torch.from_numpy(v) for k, v in dirs_rp.items()})


def _texts(lm, contexts):
    pair = data.persona_pair("care-over-authority")
    return pair, [render_prompt(lm.tokenizer, c, pair.pos) for c in contexts], \
        [render_prompt(lm.tokenizer, c, pair.neg) for c in contexts]


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0))


def run(lm, n_contexts: int = 256, batch_size: int = 16, n_cosine: int = 64) -> tuple[str, dict]:
    reason = available()
    if reason:
        return f"skipped: {reason}", {"skipped": reason}
    layers = parse_layers("mid", lm.n_layers)
    ctx = (data.contexts() * (n_contexts // len(data.contexts()) + 1))[:n_contexts]
    pair, pos, neg = _texts(lm, ctx)
    cfg = ExtractConfig(batch_size=batch_size)
    extract(lm, pair.pos, pair.neg, ctx[:batch_size], cfg)  # warm-up
    t_ours, _ = _timed(lambda: extract(lm, pair.pos, pair.neg, ctx, cfg))
    (t_sv, _), (t_rp, _) = _peer_vectors(lm, pos, neg, layers, batch_size)
    # Agreement on an fp32 copy (the model's dtype only changes the rounding floor).
    lm32 = load_model(lm.spec, "cpu", torch.float32) if lm.dtype != torch.float32 else lm
    small = ctx[:n_cosine]
    _, pos32, neg32 = _texts(lm32, small)
    ours_md = extract(lm32, pair.pos, pair.neg, small, cfg)
    ours_pca = extract(lm32, pair.pos, pair.neg, small, ExtractConfig(batch_size=batch_size, method="pca"))
    (_, sv_dirs), (_, rp_dirs) = _peer_vectors(lm32, pos32, neg32, layers, batch_size)
    cos_sv = min(_cos(ours_md.directions[k], sv_dirs[k]) for k in layers)
    cos_rp = min(abs(_cos(ours_pca.directions[k], rp_dirs[k])) for k in layers)
    row = {"contexts": n_contexts, "batch": batch_size, "ours_ctx_s": n_contexts / t_ours,
           "sv_ctx_s": n_contexts / t_sv, "repeng_ctx_s": n_contexts / t_rp, "cos_sv": cos_sv, "cos_repeng": cos_rp}
    text = table(["library", "method", "ctx/s", "ours / theirs (target >= 1.0)", f"min cosine vs ours (fp32, "
                  f"{n_cosine} ctx)"],
                 [["steerheal", "mean_diff", f"{row['ours_ctx_s']:.1f}", "1.00", "-"],
                  ["steering-vectors 0.12.2", "mean aggregator", f"{row['sv_ctx_s']:.1f}",
                   f"{t_sv / t_ours:.2f}", f"{cos_sv:.6f} (vs our mean_diff)"],
                  ["repeng 0.4.0", "pca_diff", f"{row['repeng_ctx_s']:.1f}", f"{t_rp / t_ours:.2f}",
                   f"{cos_rp:.6f} (abs, vs our pca)"]])
    return text, row
