"""Steering-resistance probe (DESIGN.md section 9, seed 003): how hard is a fact to steer away?

For each fact (a true answer, a false alternative, paraphrased questions):

1. Vector: mean over the first `n_extract` paraphrases of the block outputs read at the last
   answer token, `prompt + false` minus `prompt + true` (a contrastive vector towards the
   false answer), on the configured layers.
2. Unit: the coefficient whose greedy steered rollouts on held-out prompts cost p95 token KL
   `target_kl` (the iso-KL calibration of `dose.calibrate`). The sweep runs at signed
   multiples of it; each point's own p95 KL is measured too.
3. At each point, on the remaining (held-out) paraphrases: the answer log-ratio
   log p(false) - log p(true); and the capability check: the fraction of `n_control` other
   facts whose true answer still beats their false one.

Per fact: `KL_flip` is the smallest measured KL (positive side) at which the false answer wins
on most held-out paraphrases; `KL_break` the smallest at which capability falls below
`break_frac` of its unsteered value; the window `KL_break - KL_flip` is negative when
capability breaks first (the fact resists). Per (fact, paraphrase) sample, the steerability
slope is the least-squares slope of the log-ratio against the signed multiplier over
|multiplier| <= 1 (and 0); a negative slope is anti-steerable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import data
from .answers import answer_ids, answer_logprobs
from .chat import has_chat_template, render_question
from .config import CalibrateConfig, ResistConfig
from .dose import calibrate, kl_stats
from .errors import CalibrationError, SteerhealError
from .models import LoadedModel
from .progress import progress
from .runs import atomic_path, ensure_writable_dir, write_json, write_text
from .steering.extract import read_activations
from .steering.hooks import steer
from .steering.layers import parse_layers
from .steering.vector import SteeringVector

CHAT_SUFFIX = " Answer in one or two words."  # chat models otherwise open with a full sentence


@dataclass(frozen=True)
class Fact:
    id: str
    true: str
    false: str
    questions: tuple[str, ...]
    domain: str = ""


def load_facts(path: str | Path | None = None) -> list[Fact]:
    """The shipped fact set (`data/facts.jsonl`) or a JSONL file with the same fields."""
    if path and not Path(path).is_file():
        raise SteerhealError(f"fact file {path} does not exist", "check the path")
    rows = data.read_jsonl(path) if path else data.read_jsonl(Path(data.__file__).parent / "facts.jsonl")
    where = path or "the shipped facts.jsonl"
    facts = []
    for n, r in enumerate(rows, 1):
        ok = isinstance(r, dict) and all(isinstance(r.get(k), str) and r[k].strip() for k in ("id", "true", "false"))
        qs = r.get("questions") if isinstance(r, dict) else None
        if not ok or not isinstance(qs, list) or len(qs) < 2 or not all(isinstance(q, str) and q.strip() for q in qs):
            raise SteerhealError(f"{where} line {n} is not a fact",
                                 'write {"id", "true", "false", "questions": [at least 2 paraphrases]}')
        facts.append(Fact(r["id"], r["true"].strip(), r["false"].strip(), tuple(qs), r.get("domain", "")))
    if not facts:
        raise SteerhealError(f"{where} has no facts", "add at least one fact per line")
    return facts


def check_facts(lm: LoadedModel, facts: Sequence[Fact], cfg: ResistConfig) -> None:
    """Facts the probe cannot read: alternatives that tokenise identically, too few paraphrases."""
    for f in facts:
        if answer_ids(lm, f.true) == answer_ids(lm, f.false):
            raise SteerhealError(f"fact {f.id}: {f.true!r} and {f.false!r} tokenise identically",
                                 "choose a false alternative that differs in its tokens")
        if len(f.questions) <= cfg.n_extract:
            raise SteerhealError(f"fact {f.id} has {len(f.questions)} paraphrases, not more than n_extract "
                                 f"{cfg.n_extract}", "add paraphrases or lower n_extract")


def question_text(lm: LoadedModel, question: str) -> str:
    return render_question(lm.tokenizer, question + CHAT_SUFFIX if has_chat_template(lm.tokenizer) else question)


def fact_vector(lm: LoadedModel, fact: Fact, cfg: ResistConfig) -> SteeringVector:
    """Contrastive vector towards the false answer, read at the last answer token."""
    layers = parse_layers(cfg.layers, lm.n_layers)
    prompts = [question_text(lm, q) for q in fact.questions[:cfg.n_extract]]
    ans = {a: lm.tokenizer.decode(answer_ids(lm, a)) for a in (fact.false, fact.true)}
    texts = [p + ans[a] for a in (fact.false, fact.true) for p in prompts]
    acts = read_activations(lm, texts, layers, cfg.batch_size)
    n = len(prompts)
    return SteeringVector(
        directions={k: a[:n].mean(0) - a[n:].mean(0) for k, a in acts.items()}, model_spec=lm.spec,
        model_revision=lm.revision, d_model=lm.d_model, n_layers=lm.n_layers, read_position="last_answer_token",
        pos=fact.false, neg=fact.true, n_contexts=n,
        extra={"fact": fact.id, "residual_norm": {k: float(a.norm(dim=-1).mean()) for k, a in acts.items()}})


@dataclass
class SweepPoint:
    multiplier: float
    coeff: float
    kl: float  # p95 token KL of this point's steered rollouts
    log_ratios: list[float]  # log p(false) - log p(true), one per held-out paraphrase
    capability: float  # fraction of control facts still answered truly

    @property
    def false_wins(self) -> bool:
        return sum(r > 0 for r in self.log_ratios) > len(self.log_ratios) / 2


@dataclass
class FactSweep:
    fact: str
    unit_coeff: float
    unit_kl: float
    points: list[SweepPoint] = field(default_factory=list)  # sorted by multiplier, 0 included

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FactSweep:
        return cls(d["fact"], d["unit_coeff"], d["unit_kl"], [SweepPoint(**p) for p in d["points"]])


def _probe(lm: LoadedModel, fact: Fact, controls: Sequence[Fact], cfg: ResistConfig) -> tuple[list[float], float]:
    held = [question_text(lm, q) for q in fact.questions[cfg.n_extract:]]
    ctrl = [question_text(lm, c.questions[-1]) for c in controls]
    prompts = held + ctrl
    lp_false = answer_logprobs(lm, prompts, [fact.false] * len(held) + [c.false for c in controls],
                               batch_size=cfg.batch_size)
    lp_true = answer_logprobs(lm, prompts, [fact.true] * len(held) + [c.true for c in controls],
                              batch_size=cfg.batch_size)
    ratio = (lp_false - lp_true).tolist()
    capability = float(np.mean([r < 0 for r in ratio[len(held):]])) if controls else float("nan")
    return ratio[:len(held)], capability


def sweep_fact(lm: LoadedModel, fact: Fact, vector: SteeringVector, unit: float, controls: Sequence[Fact],
               kl_texts: Sequence[str], cfg: ResistConfig, unit_kl: float | None = None) -> FactSweep:
    """Log-ratio, capability and KL at every multiplier of `unit` (and at 0)."""
    cal = CalibrateConfig(n_prompts=cfg.kl_prompts, n_tokens=cfg.kl_tokens, batch_size=cfg.batch_size)
    sweep = FactSweep(fact.id, unit, cfg.target_kl if unit_kl is None else unit_kl)
    for m in sorted({0.0, *cfg.multipliers}):
        coeff = m * unit
        with steer(lm, vector, coeff):
            ratios, capability = _probe(lm, fact, controls, cfg)
        kl = kl_stats(lm, vector, coeff, kl_texts, cal).p95 if m else 0.0
        sweep.points.append(SweepPoint(m, coeff, kl, ratios, capability))
    return sweep


def kl_texts_for(lm: LoadedModel, cfg: ResistConfig) -> list[str]:
    return [render_question(lm.tokenizer, p) for p in data.heldout_prompts()[:cfg.kl_prompts]]


def unit_coeff(lm: LoadedModel, vector: SteeringVector, cfg: ResistConfig) -> tuple[float, float]:
    """(coefficient, reached p95 KL) of the iso-KL unit."""
    cal = CalibrateConfig(target_kl=cfg.target_kl, n_prompts=cfg.kl_prompts, n_tokens=cfg.kl_tokens,
                          batch_size=cfg.batch_size)
    result = calibrate(lm, vector, kl_texts_for(lm, cfg), cal, rendered=True)
    return result.coeff, result.stats.p95


def controls_for(facts: Sequence[Fact], index: int, n: int) -> list[Fact]:
    """The next `n` facts after `index`, cyclically: each fact's capability check skips itself."""
    others = [facts[(index + k) % len(facts)] for k in range(1, len(facts))]
    return others[:n]


# ----- summaries -------------------------------------------------------------------------

def _first_kl(points: Sequence[SweepPoint], hit) -> float:
    for p in points:
        if p.multiplier > 0 and hit(p):
            return p.kl
    return math.inf


def fact_summary(sweep: FactSweep, cfg: ResistConfig) -> dict:
    points = sweep.points
    base = next(p for p in points if p.multiplier == 0)
    kl_flip = _first_kl(points, lambda p: p.false_wins)
    kl_break = _first_kl(points, lambda p: p.capability < cfg.break_frac * base.capability) \
        if base.capability > 0 else math.nan
    near = [p for p in points if abs(p.multiplier) <= 1]
    xs = np.array([p.multiplier for p in near])
    slopes = [float(np.polyfit(xs, np.array([p.log_ratios[j] for p in near]), 1)[0])
              for j in range(len(base.log_ratios))] if len(near) >= 2 else []
    return {"fact": sweep.fact, "unit_coeff": sweep.unit_coeff, "unit_kl": sweep.unit_kl,
            "base_log_ratio": float(np.mean(base.log_ratios)), "base_capability": base.capability,
            "kl_flip": kl_flip, "kl_break": kl_break, "window": kl_break - kl_flip, "slopes": slopes}


def _median_ci(x: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """Median with a percentile-bootstrap 95% interval (inf values allowed: they sort last)."""
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    # Order statistics only (no interpolation), so "not reached" (inf) stays meaningful.
    meds = np.quantile(rng.choice(x, size=(n, x.size), replace=True), 0.5, axis=1, method="inverted_cdf")
    return (float(np.quantile(x, 0.5, method="inverted_cdf")), float(np.quantile(meds, 0.025, method="inverted_cdf")),
            float(np.quantile(meds, 0.975, method="inverted_cdf")))


def model_summary(rows: Sequence[dict]) -> dict:
    """Per-model read-out of per-fact summaries."""
    flips = np.array([r["kl_flip"] for r in rows], dtype=float)
    breaks = np.array([r["kl_break"] for r in rows], dtype=float)
    windows = np.array([r["window"] for r in rows], dtype=float)
    slopes = np.array([s for r in rows for s in r["slopes"]], dtype=float)
    known = np.array([r["base_log_ratio"] < 0 for r in rows])
    ok_w = windows[~np.isnan(windows)]
    return {
        "n_facts": len(rows), "known_unsteered": float(known.mean()) if rows else math.nan,
        "flipped": float(np.isfinite(flips).mean()) if rows else math.nan,
        "kl_flip_median_ci": _median_ci(flips), "kl_break_median_ci": _median_ci(breaks[~np.isnan(breaks)]),
        "window_median_ci": _median_ci(ok_w), "resists": float((ok_w < 0).mean()) if ok_w.size else math.nan,
        "slope_mean": float(slopes.mean()) if slopes.size else math.nan,
        "slope_ci": (float(slopes.mean() - 1.96 * slopes.std(ddof=1) / math.sqrt(slopes.size)),
                     float(slopes.mean() + 1.96 * slopes.std(ddof=1) / math.sqrt(slopes.size)))
        if slopes.size > 1 else (math.nan, math.nan),
        "anti_steerable": float((slopes < 0).mean()) if slopes.size else math.nan, "n_samples": int(slopes.size),
    }


# ----- the run: per-fact sweeps (resumable), summary, table, plot -------------------------

def _fmt(x: float) -> str:
    return "none" if math.isinf(x) else ("n/a" if math.isnan(x) else f"{x:.3g}")


def _median_cell(triple, pos_inf: str, neg_inf: str) -> str:
    m, lo, hi = triple
    if math.isinf(m):
        return pos_inf if m > 0 else neg_inf
    return f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi) if math.isfinite(hi) else pos_inf}]"


def format_table(lm_spec: str, s: dict, top: float) -> str:
    beyond = f"not reached (> {top:.3g})"
    rows = [("facts", str(s["n_facts"])), ("known unsteered (true beats false)", _fmt(s["known_unsteered"])),
            ("flipped within the sweep", _fmt(s["flipped"])),
            ("KL_flip (nats), median [95% CI]", _median_cell(s["kl_flip_median_ci"], beyond, "-")),
            ("KL_break (nats), median [95% CI]", _median_cell(s["kl_break_median_ci"], beyond, "-")),
            ("window KL_break - KL_flip, median [95% CI]",
             _median_cell(s["window_median_ci"], "positive (no break in range)", "negative (no flip in range)")),
            ("resists (window < 0)", _fmt(s["resists"])),
            ("steerability slope, mean [95% CI] (log-ratio nats per unit)",
             f"{_fmt(s['slope_mean'])} [{_fmt(s['slope_ci'][0])}, {_fmt(s['slope_ci'][1])}]"),
            ("anti-steerable fraction", f"{_fmt(s['anti_steerable'])} of {s['n_samples']} samples")]
    head = f"| {lm_spec} | |\n|---|---|\n"
    return head + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def plot(sweeps: Sequence[FactSweep], rows: Sequence[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for sw in sweeps:
        xs = [math.copysign(p.kl, p.multiplier) for p in sw.points]
        ax1.plot(xs, [float(np.mean(p.log_ratios)) for p in sw.points], "-", alpha=0.3, lw=0.8)
        ax2.plot(xs, [p.capability for p in sw.points], "-", alpha=0.3, lw=0.8)
    flips = [r["kl_flip"] for r in rows if math.isfinite(r["kl_flip"])]
    for ax in (ax1, ax2):
        ax.axvline(0, color="k", lw=0.5)
        if flips:
            ax.axvline(float(np.median(flips)), color="C3", ls="--", lw=1, label="median KL_flip")
        ax.set_xlabel("signed p95 token KL of the point (nats; sign = towards false / away)")
        ax.grid(True, alpha=0.3)
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_ylabel("log p(false) - log p(true), mean over held-out paraphrases")
    ax2.set_ylabel("capability: control facts answered truly")
    ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def strict_json(obj):
    """Non-finite floats become None (JSON has no inf/nan; "not reached" reads as null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def _load_sweeps(path: Path) -> dict[str, FactSweep]:
    return {d["fact"]: FactSweep.from_dict(d) for d in data.read_jsonl(path)} if path.exists() else {}


def _check_provenance(out: Path, record: dict) -> None:
    """The same model and settings as the run already in `out` (`limit` may differ: it says how
    many facts, not how each is swept, so a run can be extended)."""
    record = json.loads(json.dumps(record))  # tuples become lists, as on disk
    cfg_path = out / "config.json"

    def how(r: dict) -> dict:
        return r | {"config": {k: v for k, v in r.get("config", {}).items() if k != "limit"}}

    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if how(old) != how(record):
            raise SteerhealError(f"{out} holds a resistance run with other settings or model ({old.get('model')})",
                                 "use a new --out directory, or the same settings to resume")
    else:
        write_json(cfg_path, record)


def run_resist(lm: LoadedModel, facts: Sequence[Fact], cfg: ResistConfig, out: str | Path,
               facts_source: str = "shipped", log=print) -> dict:
    """Sweep every fact (resuming finished ones from `out/sweeps.jsonl`); write the read-out."""
    out = Path(out)
    facts = list(facts)[: cfg.limit] if cfg.limit else list(facts)
    check_facts(lm, facts, cfg)
    ensure_writable_dir(out)
    _check_provenance(out, {"model": lm.spec, "revision": lm.revision, "facts": facts_source,
                            "config": asdict(cfg)})
    sweeps_path = out / "sweeps.jsonl"
    done = _load_sweeps(sweeps_path)
    kl_texts = kl_texts_for(lm, cfg)
    for i, fact in enumerate(progress(facts, desc="resist: facts", total=len(facts))):
        if fact.id in done:
            continue
        vector = fact_vector(lm, fact, cfg)
        try:
            unit, reached = unit_coeff(lm, vector, cfg)
        except CalibrationError as err:
            log(f"fact {fact.id}: skipped, the iso-KL unit could not be calibrated ({err})")
            continue
        done[fact.id] = sweep_fact(lm, fact, vector, unit, controls_for(facts, i, cfg.n_control), kl_texts, cfg,
                                   unit_kl=reached)
        write_text(sweeps_path, "".join(json.dumps(s.to_dict()) + "\n" for s in done.values()))
    sweeps = [done[f.id] for f in facts if f.id in done]
    if not sweeps:
        raise SteerhealError("no fact could be swept", "lower target_kl or use another model")
    rows = [fact_summary(s, cfg) for s in sweeps]
    summary = model_summary(rows)
    top = max(p.kl for s in sweeps for p in s.points)
    write_json(out / "facts.json", strict_json(rows))
    write_json(out / "summary.json", strict_json({"model": lm.spec, "revision": lm.revision, **summary,
                                                  "max_kl": top}))
    table = format_table(lm.spec, summary, top)
    write_text(out / "table.md", table)
    plot(sweeps, rows, out / "resist.png", f"{lm.spec}: steering each fact towards its false answer "
         f"(unit = p95 KL {cfg.target_kl} nats)")
    return {"summary": summary, "table": table, "rows": rows}
