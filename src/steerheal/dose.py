"""iso-KL calibration: the coefficient at which steering costs a fixed amount of KL.

Statistic (DESIGN.md section 3): for each calibration prompt, greedy-generate `n_tokens` with
steering, then teacher-force that sequence with and without steering and take the per-token
KL(p_steered || p_base) at every generated position. Pool over prompts and positions; the
calibrated statistic is the p95 (mean, p50 and max are reported too).

Solver: in (log coefficient, log KL) space, bracket the target by doubling/halving from a
start, then Illinois regula falsi (bisection whenever a secant step is unusable), until
|p95 - target| < tol nats or `max_evals` evaluations. A target that cannot be bracketed
raises `CalibrationError`; running out of evaluations returns `converged=False`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from .chat import encode, render_prompt
from .config import CalibrateConfig
from .errors import CalibrationError, SteerhealError
from .generate import first_stop, stop_token_ids
from .models import LoadedModel
from .progress import progress
from .steering.hooks import SteerSpec, steering
from .steering.vector import SteeringVector


@dataclass
class KLStats:
    coeff: float
    p95: float  # the configured quantile (0.95 by default)
    mean: float
    p50: float
    max: float
    n_tokens: int
    seconds: float


@dataclass
class CalibrationResult:
    coeff: float
    target_kl: float
    stats: KLStats
    converged: bool
    n_evals: int
    trace: list[KLStats] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class VectorIntervention:
    """A steering vector seen through the interface calibration needs: apply at a coefficient."""

    def __init__(self, vector: SteeringVector, scope: str = "all", allow_other_model: bool = False):
        self.vector, self.scope, self.allow_other_model = vector, scope, allow_other_model

    def applied(self, lm: LoadedModel, coeff: float, prompt_len: int | None = None):
        return steering(lm, [SteerSpec(self.vector, coeff, scope=self.scope)], prompt_len=prompt_len,
                        allow_other_model=self.allow_other_model)

    def start_coeff(self) -> float:
        return initial_coeff(self.vector)


def as_intervention(target, cfg: CalibrateConfig, allow_other_model: bool = False):
    """SteeringVector -> VectorIntervention; anything with `applied` and `start_coeff` (a
    weight-steering dW, for one) is used as is."""
    if isinstance(target, SteeringVector):
        return VectorIntervention(target, cfg.scope, allow_other_model)
    if not (hasattr(target, "applied") and hasattr(target, "start_coeff")):
        raise SteerhealError(f"cannot calibrate a {type(target).__name__}", "pass a SteeringVector or a WeightDelta")
    return target


def _token_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position over the vocabulary, in fp32."""
    logp = torch.log_softmax(logits_p.float(), dim=-1)
    logq = torch.log_softmax(logits_q.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


@torch.no_grad()
def steered_token_kls(lm: LoadedModel, vector, coeff: float, texts: Sequence[str],
                      cfg: CalibrateConfig, *, allow_other_model: bool = False) -> torch.Tensor:
    """Pooled per-token KL(steered || base) over greedy steered rollouts of `texts` (rendered).

    `vector` is a SteeringVector or any intervention with `applied(lm, coeff, prompt_len)`."""
    stops = stop_token_ids(lm)
    intervention = as_intervention(vector, cfg, allow_other_model)
    pooled = []
    for start in range(0, len(texts), cfg.batch_size):
        batch = encode(lm.tokenizer, list(texts[start:start + cfg.batch_size]),
                       lm.max_positions - cfg.n_tokens, lm.device)
        P = batch.prompt_len
        with intervention.applied(lm, coeff, P):
            seqs = lm.model.generate(**{k: v for k, v in batch.model_inputs().items() if k != "position_ids"},
                                     max_new_tokens=cfg.n_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, eos_token_id=stops,
                                     pad_token_id=lm.tokenizer.pad_token_id)
        new = seqs[:, P:]
        T = new.shape[1]
        end, found = first_stop(new.cpu(), stops)
        # A generated position counts up to and including its row's first stop token.
        valid = torch.arange(T).unsqueeze(0) <= torch.where(found, end, end - 1).unsqueeze(1)
        mask = torch.cat([batch.attention_mask.cpu(), valid.long()], dim=1).to(lm.device)
        inputs = {"input_ids": seqs, "attention_mask": mask,
                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "logits_to_keep": T + 1,
                  "use_cache": False}
        with intervention.applied(lm, coeff, P):
            steered = lm.model(**inputs).logits[:, :-1]
        base = lm.model(**inputs).logits[:, :-1]
        pooled.append(_token_kl(steered, base)[valid.to(lm.device)].cpu())
    return torch.cat(pooled)


def kl_stats(lm: LoadedModel, vector, coeff: float, texts: Sequence[str],
             cfg: CalibrateConfig, **kwargs) -> KLStats:
    t0 = time.perf_counter()
    kls = steered_token_kls(lm, vector, coeff, texts, cfg, **kwargs).double()
    return KLStats(coeff=coeff, p95=float(torch.quantile(kls, cfg.quantile)), mean=float(kls.mean()),
                   p50=float(kls.median()), max=float(kls.max()), n_tokens=int(kls.numel()),
                   seconds=time.perf_counter() - t0)


def initial_coeff(vector: SteeringVector) -> float:
    """Start where the addition is ~20% of the residual norm at the read layers (or 1.0)."""
    if vector.coeff:
        return abs(vector.coeff)
    resid = {int(k): float(v) for k, v in (vector.extra or {}).get("residual_norm", {}).items()}
    norms = vector.norms
    if resid and all(k in resid for k in norms):
        ratio = sum(resid[k] for k in norms) / sum(norms.values())
        return max(0.2 * ratio, 1e-3)
    return 1.0


def _kl_texts(lm: LoadedModel, prompts: Sequence[str], cfg: CalibrateConfig, system: str | None,
              rendered: bool) -> list[str]:
    prompts = [p for p in prompts if p and p.strip()][: cfg.n_prompts]
    if not prompts:
        raise SteerhealError("no calibration prompts", "pass at least one held-out prompt")
    return list(prompts) if rendered else [render_prompt(lm.tokenizer, p, system) for p in prompts]


def kl_at(lm: LoadedModel, vector, coeff: float, prompts: Sequence[str], cfg: CalibrateConfig | None = None, *,
          system: str | None = None, rendered: bool = False, **kwargs) -> KLStats:
    """The KL statistics `calibrate` matches, measured at one fixed coefficient (a dose-response point)."""
    cfg = cfg or CalibrateConfig()
    return kl_stats(lm, vector, coeff, _kl_texts(lm, prompts, cfg, system, rendered), cfg, **kwargs)


def calibrate(lm: LoadedModel, vector, prompts: Sequence[str],
              cfg: CalibrateConfig | None = None, *, system: str | None = None,
              desc: str | None = None, rendered: bool = False, **kwargs) -> CalibrationResult:
    """Find the coefficient whose steered rollouts have p95 token KL == cfg.target_kl.

    `vector` is a SteeringVector or a weight-steering WeightDelta (any intervention with
    `applied(lm, coeff, prompt_len)` and `start_coeff()`); negate it for the other sign.
    `rendered=True`: `prompts` are already full prompt texts (e.g. for a base model)."""
    cfg = cfg or CalibrateConfig()
    texts = _kl_texts(lm, prompts, cfg, system, rendered)
    target = cfg.target_kl
    trace: list[KLStats] = []
    bar = progress(range(cfg.max_evals), desc=desc, total=cfg.max_evals)
    bar_iter = iter(bar)

    def f(x: float) -> float:
        next(bar_iter, None)
        stats = kl_stats(lm, vector, math.exp(x), texts, cfg, **kwargs)
        trace.append(stats)
        return math.log(max(stats.p95, 1e-12)) - math.log(target)

    def done() -> bool:
        return abs(trace[-1].p95 - target) < cfg.tol

    def result(converged: bool) -> CalibrationResult:
        best = min(trace, key=lambda s: abs(s.p95 - target))
        if hasattr(bar, "close"):
            bar.close()
        return CalibrationResult(coeff=best.coeff, target_kl=target, stats=best, converged=converged,
                                 n_evals=len(trace), trace=trace)

    x0 = math.log(cfg.init_coeff or as_intervention(vector, cfg).start_coeff())
    a, fa = x0, f(x0)
    if done():
        return result(True)
    step = math.log(2.0) * (1 if fa < 0 else -1)
    b, fb = a, fa
    while fa * fb > 0:  # bracket by doubling (KL too low) or halving (too high)
        if len(trace) >= cfg.max_evals or abs(b + step - x0) > math.log(cfg.max_coeff_factor):
            side = "below" if fb < 0 else "above"
            raise CalibrationError(
                f"cannot bracket p95 KL target {target} nats: it stayed {side} the target from "
                f"coefficient {math.exp(x0):.4g} to {math.exp(b):.4g} (last p95 {trace[-1].p95:.4g})",
                "choose a target this vector can reach (see the trace with --json), or another vector",
            )
        a, fa = b, fb
        b = b + step
        fb = f(b)
        if done():
            return result(True)
    side = 0  # Illinois: halve the stale endpoint's value when the same side is kept twice
    while len(trace) < cfg.max_evals:
        usable = math.isfinite(fa) and math.isfinite(fb) and fa != fb
        x = b - fb * (b - a) / (fb - fa) if usable else (a + b) / 2
        lo, hi = min(a, b), max(a, b)
        if not lo < x < hi:
            x = (a + b) / 2
        fx = f(x)
        if done():
            return result(True)
        if fx * fb < 0:
            a, fa = b, fb
            side = 0
        else:
            if side == -1:
                fa /= 2
            side = -1
        b, fb = x, fx
    return result(False)


@dataclass
class DoseProbe:
    kappa: float
    coeff: float
    pass_rate: float
    n: int
    prompt_offset: int
    dropped_by: dict = field(default_factory=dict)


@dataclass
class DoseResult:
    coeff: float
    kappa: float
    c_iso: float
    target_pass: float
    reached: bool  # False: even the smallest probed dose kept fewer than target_pass
    probes: list[DoseProbe] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def walk_c(probe, c_iso: float, n_prompts: int, *, target_pass: float = 0.75, per_probe: int = 8,
           max_probes: int = 5, kappa_bounds: tuple[float, float] = (1 / 16, 16.0), ratio_tol: float = 1.3,
           log=None) -> DoseResult:
    """Bisect the dose kappa (coefficient = kappa * c_iso) in log space for the filter pass rate.

    `probe(coeff, offset, count)` generates and filters `count` completions starting at prompt
    `offset` (wrapping around) and returns a FilterReport. Successive probes use successive
    prompt windows, so the search does not keep re-reading the first prompts. The result is
    the largest probed kappa whose pass rate reached `target_pass`.
    """
    lo = hi = None  # largest passing kappa, smallest failing kappa
    kappa, probes = 1.0, []
    for j in range(max_probes):
        offset = (j * per_probe) % max(n_prompts, 1)
        report = probe(kappa * c_iso, offset, per_probe)
        probes.append(DoseProbe(kappa, kappa * c_iso, report.pass_rate, len(report.scores), offset,
                                dict(report.dropped_by)))
        if log:
            log(probes[-1])
        if report.pass_rate >= target_pass:
            lo = kappa if lo is None else max(lo, kappa)
        else:
            hi = kappa if hi is None else min(hi, kappa)
        if lo is not None and hi is not None and hi / lo <= ratio_tol:
            break
        if hi is None:
            kappa = min(kappa * 2, kappa_bounds[1])
        elif lo is None:
            kappa = max(kappa / 2, kappa_bounds[0])
        else:
            kappa = math.sqrt(lo * hi)
        if any(abs(math.log(p.kappa / kappa)) < 1e-9 for p in probes):
            break  # pinned at a bound
    reached = lo is not None
    chosen = lo if reached else min(p.kappa for p in probes)
    return DoseResult(coeff=chosen * c_iso, kappa=chosen, c_iso=c_iso, target_pass=target_pass, reached=reached,
                      probes=probes)
