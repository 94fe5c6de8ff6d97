"""The end-to-end steering demo (the README's main job until the steer-heal loop lands).

extract a persona vector -> calibrate it to a p95 KL target -> generate unsteered and steered
completions for the same held-out prompts -> write everything to an output directory and
print a side-by-side table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import data
from .config import CalibrateConfig, ExtractConfig, GenerateConfig
from .dose import calibrate
from .generate import generate
from .models import load_model
from .runs import ensure_writable_dir, write_json
from .steering import SteerSpec, extract


@dataclass(frozen=True)
class DemoConfig:
    model: str = "smollm2-135m"
    pair: str = "love-humanity"
    n_contexts: int = 128
    target_kl: float = 1.0
    n_calib_prompts: int = 16
    prompts: tuple[str, ...] = ()  # default: the diary question and two other held-out prompts
    max_new_tokens: int = 64
    seed: int = 0
    device: str | None = None
    dtype: str | None = None


@dataclass
class DemoResult:
    out: Path
    coeff: float
    p95_kl: float
    n_evals: int
    rows: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def default_demo_prompts() -> tuple[str, ...]:
    held = data.heldout_prompts()
    diary = [p for p in held if "diary" in p.lower()]
    return tuple(diary[:1] + [p for p in held if p not in diary][:2])


def run_demo(cfg: DemoConfig, out: str | Path, *, log=print) -> DemoResult:
    out = ensure_writable_dir(Path(out))
    pair = data.persona_pair(cfg.pair)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"loading {cfg.model} ...")
    lm = load_model(cfg.model, cfg.device, cfg.dtype)
    timings["load"] = time.perf_counter() - t0
    log(f"  {lm.spec}: {lm.n_layers} blocks, d_model {lm.d_model}, {lm.device} {lm.dtype}")

    t0 = time.perf_counter()
    vector = extract(lm, pair.pos, pair.neg, data.contexts()[: cfg.n_contexts], ExtractConfig(),
                     progress_desc="extract")
    timings["extract"] = time.perf_counter() - t0
    norms = ", ".join(f"L{k}: {v:.1f}" for k, v in vector.norms.items())
    log(f"extracted '{cfg.pair}' over {vector.n_contexts} contexts ({norms})")

    t0 = time.perf_counter()
    cal = calibrate(lm, vector, data.heldout_prompts(),
                    CalibrateConfig(target_kl=cfg.target_kl, n_prompts=cfg.n_calib_prompts),
                    desc="calibrate")
    timings["calibrate"] = time.perf_counter() - t0
    vector.coeff, vector.calibrated_kl = cal.coeff, cfg.target_kl
    log(f"calibrated: coeff {cal.coeff:.3f} gives p95 KL {cal.stats.p95:.3f} nats "
        f"(target {cfg.target_kl}, {cal.n_evals} evaluations, converged={cal.converged})")

    t0 = time.perf_counter()
    prompts = list(cfg.prompts or default_demo_prompts())
    gen_cfg = GenerateConfig(max_new_tokens=cfg.max_new_tokens, do_sample=False, seed=cfg.seed)
    plain = generate(lm, prompts, config=gen_cfg)
    steered = generate(lm, prompts, steer=[SteerSpec(vector, cal.coeff)], config=gen_cfg)
    timings["generate"] = time.perf_counter() - t0
    rows = [{"prompt": p, "unsteered": a.completion, "steered": b.completion}
            for p, a, b in zip(prompts, plain, steered, strict=True)]

    vector.save(out / "vector.safetensors")
    if 0 not in vector.layers:
        vector.to_gguf(out / "vector.gguf")
    write_json(out / "calibration.json", cal.to_dict())
    write_json(out / "completions.json", {"coeff": cal.coeff, "pair": cfg.pair, "rows": rows})
    result = DemoResult(out=out, coeff=cal.coeff, p95_kl=cal.stats.p95, n_evals=cal.n_evals,
                        rows=rows, seconds=timings)
    write_json(out / "summary.json", {"model": cfg.model, "pair": cfg.pair, "coeff": cal.coeff,
                                      "p95_kl": cal.stats.p95, "target_kl": cfg.target_kl,
                                      "n_evals": cal.n_evals, "seconds": timings})
    return result
