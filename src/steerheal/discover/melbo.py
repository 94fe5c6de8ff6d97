"""MELBO (Mack & Turner 2024): unsupervised steering vectors as fixed-norm biases.

A bias theta with |theta| = R is added to block `source`'s output (every real token but the
first); it is trained to maximise how far block `target`'s outputs move from their unsteered
values, ( mean over tokens |h_t(theta) - h_t(0)|^p )^(1/p). Each new vector is kept orthogonal
to the earlier ones (projected out after every step) and renormalised to R, so one call
returns several distinct directions. The forward stops after the target block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..chat import encode, non_sink_mask
from ..config import DiscoverConfig
from ..errors import SteerhealError
from ..models import LoadedModel, decoder_stack, frozen_parameters
from ..progress import progress
from ..steering.layers import check_layer
from ..steering.vector import SteeringVector
from .prompts import raw_text


class _Stop(Exception):
    pass


def _target_outputs(lm: LoadedModel, batch, source: int, target: int, theta: torch.Tensor | None,
                    keep: torch.Tensor) -> torch.Tensor:
    seen = {}

    def add(_module, _inputs, output):
        h = output if isinstance(output, torch.Tensor) else output[0]
        out = h + (theta.to(h.dtype) * keep.unsqueeze(-1).to(h.dtype))
        return out if isinstance(output, torch.Tensor) else (out, *output[1:])

    def grab(_module, _inputs, output):
        seen["h"] = (output if isinstance(output, torch.Tensor) else output[0]).float()
        raise _Stop

    handles = [lm.blocks[target].register_forward_hook(grab)]
    if theta is not None:
        handles.append(lm.blocks[source].register_forward_hook(add))
    try:
        decoder_stack(lm.model)(**batch.model_inputs(), use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return seen["h"]


def layers_for(lm: LoadedModel, cfg: DiscoverConfig) -> tuple[int, int]:
    source = lm.n_layers // 4 if cfg.source is None else check_layer(lm.n_layers, cfg.source, "source", lm.spec)
    target = (3 * lm.n_layers) // 4 if cfg.target is None else check_layer(lm.n_layers, cfg.target, "target", lm.spec)
    if target <= source:
        raise SteerhealError(f"MELBO target block {target} must come after source block {source}",
                             "choose --target greater than --source")
    return source, target


def melbo(lm: LoadedModel, prompts: Sequence[str], cfg: DiscoverConfig) -> tuple[list[SteeringVector], list[list]]:
    """`cfg.n` mutually orthogonal vectors at the source block, each of norm R; with their traces."""
    source, target = layers_for(lm, cfg)
    texts = [raw_text(lm.tokenizer, p) for p in prompts]
    batch = encode(lm.tokenizer, texts, lm.max_positions, lm.device)
    keep = non_sink_mask(batch.attention_mask)
    with torch.no_grad():
        base = _target_outputs(lm, batch, source, target, None, keep)
        resid = _target_outputs(lm, batch, source, source, None, keep)
    radius = cfg.radius * float(resid.norm(dim=-1)[keep].mean())
    gen = torch.Generator().manual_seed(cfg.seed)
    found: list[torch.Tensor] = []
    traces = []
    with frozen_parameters(lm.model):
        for _ in progress(range(cfg.n), desc="melbo vectors", total=cfg.n):
            theta = _project(torch.randn(lm.d_model, generator=gen), found, radius).to(lm.device)
            theta.requires_grad_(True)
            opt = torch.optim.Adam([theta], lr=cfg.melbo_lr * radius)
            trace = []
            for _ in range(cfg.melbo_steps):
                with torch.enable_grad():
                    moved = _target_outputs(lm, batch, source, target, theta, keep)
                    dist = (moved - base).norm(dim=-1)[keep]
                    objective = dist.pow(cfg.power).mean().pow(1 / cfg.power)
                    opt.zero_grad()
                    (-objective).backward()
                opt.step()
                with torch.no_grad():
                    theta.copy_(_project(theta.detach().cpu(), found, radius).to(lm.device))
                trace.append(float(objective.detach()))
            found.append(theta.detach().float().cpu())
            traces.append(trace)
    vectors = [SteeringVector({source: v}, model_spec=lm.spec, model_revision=lm.revision, d_model=lm.d_model,
                              n_layers=lm.n_layers, read_position="all_tokens_but_first", method="melbo",
                              extra={"target_layer": target, "radius": radius, "index": i})
               for i, v in enumerate(found)]
    return vectors, traces


def _project(v: torch.Tensor, previous: Sequence[torch.Tensor], radius: float) -> torch.Tensor:
    v = v.float().clone()
    for _ in range(2):  # twice: Gram-Schmidt in float32 leaves ~1e-7 residues after one pass
        for p in previous:
            v -= (v @ p) / (p @ p) * p
    return v / v.norm() * radius
