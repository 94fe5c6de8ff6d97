"""iso-KL calibration cost: model evaluations and wall time to reach tolerance per target.

The care-over-authority vector (mean_diff, default layers, 64 contexts) is calibrated to
p95 token KL 0.5, 1 and 2 nats with the loop's defaults (16 held-out prompts, 20 greedy
tokens, tolerance 0.05 nats), each from the same norm-based start.
"""

from __future__ import annotations

import time

from steerheal import data
from steerheal.config import CalibrateConfig
from steerheal.dose import calibrate
from steerheal.steering import extract

from .common import table


def run(lm, targets=(0.5, 1.0, 2.0), n_contexts: int = 64, cfg: CalibrateConfig | None = None) -> tuple[str, list]:
    pair = data.persona_pair("care-over-authority")
    vec = extract(lm, pair.pos, pair.neg, data.contexts()[:n_contexts])
    rows = []
    for target in targets:
        base = cfg or CalibrateConfig()
        c = CalibrateConfig(**{**base.__dict__, "target_kl": target, "tol": min(base.tol, 0.05 * target * 2)})
        t0 = time.perf_counter()
        res = calibrate(lm, vec, data.heldout_prompts(), c)
        rows.append({"target": target, "evals": res.n_evals, "seconds": time.perf_counter() - t0,
                     "p95": res.stats.p95, "coeff": res.coeff, "converged": res.converged})
    text = table(["target p95 KL", "model evaluations", "seconds", "reached p95", "coefficient", "converged"],
                 [[r["target"], r["evals"], f"{r['seconds']:.1f}", f"{r['p95']:.3f}", f"{r['coeff']:.3f}",
                   r["converged"]] for r in rows])
    return text, rows
