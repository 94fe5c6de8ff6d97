"""Linearity score (does the direction reproduce its adapter?) with nulls, and dose-response.

Linearity (seed 001, with an embedding judge by default): held-out prompts are split into
groups; for each group the judge describes how the adapter's completions deviate from base,
and likewise the direction's (steered at coefficient 1: the adapter's mean write). The cosine
matrix between the adapter's and the direction's group descriptions is matched one-to-one with
the Hungarian algorithm; the score is the mean matched cosine (1 = the same deviations).
Nulls on the same adapter descriptions: a random direction with the same per-layer norms,
and every other search's direction (shuffled pairings).

Dose-response: question marks and length per completion and a sentiment score (embedding
cosine to a positive minus a negative anchor sentence) at signed multiples of the direction,
with the coefficient at which it costs `target_kl` nats (p95 token KL) marked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..config import CalibrateConfig, ScoreConfig
from ..dose import calibrate
from ..errors import CalibrationError, SteerhealError
from ..models import LoadedModel
from ..steering.hooks import SteerSpec
from ..steering.vector import SteeringVector
from .divergence import sample_texts
from .writes import BlockWrites

POSITIVE = "This is wonderful. I feel happy, grateful and full of hope."
NEGATIVE = "This is awful. I feel miserable, angry and without hope."


def matched_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine of the one-to-one matching of rows of `a` to rows of `b` that maximises it."""
    an = torch.nn.functional.normalize(a.float(), dim=-1)
    bn = torch.nn.functional.normalize(b.float(), dim=-1)
    sim = (an @ bn.T).numpy()
    rows, cols = linear_sum_assignment(-sim)
    return float(sim[rows, cols].mean())


def check_direction(vector: SteeringVector, name: str) -> None:
    if not vector.directions or all(float(v.norm()) == 0.0 for v in vector.directions.values()):
        raise SteerhealError(f"direction {name} has zero norm", "re-run the search (more steps or a larger lr)")


def random_like(vector: SteeringVector, seed: int) -> SteeringVector:
    """A random direction with the same norm at every layer."""
    gen = torch.Generator().manual_seed(seed)
    dirs = {}
    for k, v in vector.directions.items():
        r = torch.randn(v.numel(), generator=gen)
        dirs[k] = r / r.norm() * v.norm()
    return SteeringVector(dirs, model_spec=vector.model_spec, model_revision=vector.model_revision,
                          d_model=vector.d_model, n_layers=vector.n_layers, method="random_norm_matched")


def describe_groups(judge, base: Sequence[str], steered: Sequence[str], groups: int) -> torch.Tensor:
    idx = np.array_split(np.arange(len(base)), groups)
    return torch.stack([judge.describe([base[i] for i in g], [steered[i] for i in g]) for g in idx])


def completions(lm: LoadedModel, texts: Sequence[str], cfg: ScoreConfig, *, writes: BlockWrites | None = None,
                vector: SteeringVector | None = None, coeff: float = 1.0) -> list[str]:
    steer = [SteerSpec(vector, coeff)] if vector is not None and coeff else []
    return sample_texts(lm, texts, cfg.new_tokens, cfg.seed, writes=writes, steer=steer)


def linearity(lm: LoadedModel, judge, texts: Sequence[str], base: Sequence[str],
              adapters: Sequence[BlockWrites], vectors: Sequence[SteeringVector], cfg: ScoreConfig) -> list[dict]:
    """Per search: linearity, the random-direction null and the shuffled-pairing null."""
    ad = [describe_groups(judge, base, completions(lm, texts, cfg, writes=w), cfg.groups) for w in adapters]
    di = [describe_groups(judge, base, completions(lm, texts, cfg, vector=v), cfg.groups) for v in vectors]
    out = []
    for i, v in enumerate(vectors):
        rand = describe_groups(judge, base, completions(lm, texts, cfg, vector=random_like(v, cfg.seed + i)),
                               cfg.groups)
        shuffled = [matched_similarity(ad[i], di[j]) for j in range(len(vectors)) if j != i]
        out.append({"linearity": matched_similarity(ad[i], di[i]), "null_random": matched_similarity(ad[i], rand),
                    "null_shuffled": float(np.mean(shuffled)) if shuffled else None,
                    "adapter_shift": float(ad[i].norm(dim=-1).mean()),
                    "direction_shift": float(di[i].norm(dim=-1).mean())})
    return out


def iso_kl_coeff(lm: LoadedModel, vector: SteeringVector, texts: Sequence[str], cfg: ScoreConfig) -> float | None:
    cal = CalibrateConfig(target_kl=cfg.target_kl, n_prompts=min(8, len(texts)), n_tokens=16, init_coeff=1.0)
    try:
        return calibrate(lm, vector, texts, cal, rendered=True).coeff
    except CalibrationError:
        return None


def behaviour(judge, texts: Sequence[str], tokenizer) -> dict:
    emb = judge.embed(texts)
    anchors = judge.embed([POSITIVE, NEGATIVE])
    sentiment = (emb @ anchors[0] - emb @ anchors[1]).numpy()
    return {"question_marks": float(np.mean([t.count("?") for t in texts])),
            "length": float(np.mean([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts])),
            "sentiment": float(sentiment.mean())}


def dose_response(lm: LoadedModel, judge, vector: SteeringVector, texts: Sequence[str], cfg: ScoreConfig) -> dict:
    rows, samples = [], {}
    for c in cfg.coeffs:
        outs = completions(lm, texts, cfg, vector=vector, coeff=c)
        rows.append({"coeff": c, **behaviour(judge, outs, lm.tokenizer)})
        samples[str(c)] = outs[: cfg.samples]
    return {"rows": rows, "samples": samples, "iso_kl_coeff": iso_kl_coeff(lm, vector, texts, cfg)}
