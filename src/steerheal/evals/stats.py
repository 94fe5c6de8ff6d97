"""Paired comparisons with bootstrap confidence intervals over vignettes.

Two evaluations of the same vignettes are matched row by row (by id and condition). A
statistic maps a [resamples, rows] matrix to [resamples]; its delta B - A is recomputed on
the same resampled rows for both models (paired), `n_resamples` times with a seeded
generator, and the 95% interval is the 2.5th-97.5th percentile of those deltas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import SteerhealError
from .vignettes import FOUNDATIONS

Stat = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Delta:
    name: str
    a: float
    b: float
    delta: float
    lo: float
    hi: float

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def mean_stat(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=-1)


def log_mean_stat(x: np.ndarray) -> np.ndarray:
    return np.log(np.clip(x.mean(axis=-1), 1e-30, None))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, stat: Stat = mean_stat, *, n_resamples: int = 2000,
                     seed: int = 0, level: float = 0.95, name: str = "") -> Delta:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise SteerhealError("paired bootstrap needs two equally long, non-empty samples",
                             "compare evaluations of the same vignettes")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    deltas = stat(b[idx]) - stat(a[idx])
    lo, hi = np.quantile(deltas, [(1 - level) / 2, 1 - (1 - level) / 2])
    sa, sb = float(stat(a[None])[0]), float(stat(b[None])[0])
    return Delta(name, sa, sb, sb - sa, float(lo), float(hi))


def _matched(a: dict, b: dict) -> tuple[list[dict], list[dict]]:
    if a["protocol"] != b["protocol"]:
        raise SteerhealError(f"cannot compare a {a['protocol']} result with a {b['protocol']} result",
                             "compare evaluations of the same protocol")
    key = (lambda r: (r["id"], r.get("condition", "")))
    rb = {key(r): r for r in b["rows"]}
    pairs = [(r, rb[key(r)]) for r in a["rows"] if key(r) in rb]
    if not pairs:
        raise SteerhealError("the two evaluations share no vignettes", "evaluate both on the same dataset")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def compare(a: dict, b: dict, *, axis: str | None = None, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Per-foundation deltas (B - A) with CIs, the named axis and the largest off-target mover.

    forced-choice: `F_nats` = log mean p[F] over all matched vignettes.
    json-bool: mean logit(w) over the matched vignettes of foundation F (other_violate rows).
    """
    if axis is not None and axis not in FOUNDATIONS:
        raise SteerhealError(f"unknown axis {axis!r}", f"use one of {list(FOUNDATIONS)}")
    ra, rb = _matched(a, b)
    deltas = []
    for k, f in enumerate(FOUNDATIONS):
        # Rows are matched pairwise, so both samples select the same vignettes in the same order.
        xa, stat = foundation_sample({"protocol": a["protocol"], "rows": ra}, f)
        xb, _ = foundation_sample({"protocol": b["protocol"], "rows": rb}, f)
        if len(xa) == 0:
            continue
        deltas.append(paired_bootstrap(xa, xb, stat, n_resamples=n_resamples, seed=seed + k, name=f))
    pm = paired_bootstrap(np.array([r["pmass"] for r in ra]), np.array([r["pmass"] for r in rb]),
                          n_resamples=n_resamples, seed=seed + 99, name="pmass")
    off = [d for d in deltas if d.name != axis]
    mover = max(off, key=lambda d: abs(d.delta)) if off else None
    return {"protocol": a["protocol"], "n": len(ra), "axis": axis,
            "deltas": [d.__dict__ for d in deltas], "pmass": pm.__dict__,
            "axis_delta": next((d.__dict__ for d in deltas if d.name == axis), None),
            "largest_off_target": mover.__dict__ if mover else None, "n_resamples": n_resamples}


def format_comparison(result: dict) -> str:
    unit = "F_nats" if result["protocol"] == "forced-choice" else "logit(w)"
    lines = [f"paired comparison, {result['protocol']}, {result['n']} matched rows, {unit}, "
             f"95% bootstrap CI ({result['n_resamples']} resamples)",
             f"{'foundation':<13} {'A':>8} {'B':>8} {'B-A':>8}  {'95% CI':<19}"]
    for d in result["deltas"] + [result["pmass"]]:
        flag = " *" if (d["lo"] > 0 or d["hi"] < 0) else ""
        mark = "  <- axis" if d["name"] == result["axis"] else ""
        lines.append(f"{d['name']:<13} {d['a']:>8.3f} {d['b']:>8.3f} {d['delta']:>+8.3f}  "
                     f"[{d['lo']:+.3f}, {d['hi']:+.3f}]{flag}{mark}")
    if result["largest_off_target"]:
        m = result["largest_off_target"]
        lines.append(f"largest off-target mover: {m['name']} ({m['delta']:+.3f})")
    lines.append("* CI excludes 0")
    return "\n".join(lines)


def foundation_sample(result: dict, foundation: str) -> tuple[np.ndarray, Stat]:
    """The per-row sample and statistic behind one foundation's score in an evaluation."""
    if result["protocol"] == "forced-choice":
        return np.array([r["p"][foundation] for r in result["rows"]]), log_mean_stat
    rows = [r for r in result["rows"] if r["foundation"] == foundation and r["condition"] == "other_violate"]
    return np.array([r["logit_w"] for r in rows]), mean_stat


def estimate(result: dict, foundation: str, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """A foundation's score with a (non-paired) bootstrap 95% CI over vignettes."""
    x, stat = foundation_sample(result, foundation)
    if len(x) == 0:
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan")}
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    lo, hi = np.quantile(stat(x[idx]), [0.025, 0.975])
    return {"value": float(stat(x[None])[0]), "lo": float(lo), "hi": float(hi)}
