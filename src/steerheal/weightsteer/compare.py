"""Compare steering methods at matched KL on one table.

Rows: the base model, the prompt-only baseline (each persona as the system prompt), the
activation vector of the same pair, and each weight-steering dW, the last two calibrated to
the same iso-KL target (p95 token KL, DESIGN.md section 3) in both signs. Every row is
evaluated on the same vignettes and protocol and compared with the base model by paired
bootstrap; the Yes/No agreement probe on false claims runs on every row too.

Each finished row is cached as JSON under `<out>.parts/` keyed by its settings, so an
interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..config import CompareSettings, ExtractConfig
from ..data import PersonaPair, contexts, heldout_prompts
from ..dose import calibrate, kl_at
from ..evals import compare, evaluate
from ..evals.claims import probe_shift, yes_no_probe
from ..evals.mfv import prompt_baseline
from ..evals.vignettes import FOUNDATIONS, Vignette
from ..models import LoadedModel
from ..runs import write_json, write_text
from ..steering.extract import extract
from ..steering.hooks import SteerSpec
from ..steering.vector import SteeringVector
from .delta import WeightDelta


@dataclass
class MethodRow:
    method: str  # base | prompt | vector | ws:<kind>
    sign: int  # +1 towards the pos persona, -1 towards neg, 0 for base
    coeff: float | None = None  # calibrated coefficient (vector) or alpha (dW)
    kl_p95: float | None = None
    converged: bool | None = None
    eval: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.method if self.sign == 0 else f"{self.method} {'+' if self.sign > 0 else '-'}"


# Settings each kind of row does not depend on: a row is recomputed only when one it uses changes.
_NOT_FOR = {
    "base": ("target_kl", "rel_tol", "alpha", "calibrate", "n_contexts"),
    "prompt": ("target_kl", "rel_tol", "alpha", "calibrate", "n_contexts"),
    "vector": ("alpha",),
    "ws": ("n_contexts",),
    "ws-fixed": ("n_contexts", "target_kl", "rel_tol"),  # a fixed alpha: KL is measured, not matched
}
_NEVER = ("signs", "vector", "prompt", "n_resamples")  # choose rows or summarise them; change no row
_KL_READS = ("quantile", "n_tokens", "n_prompts", "batch_size")  # what a KL measurement at fixed alpha reads


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class MethodComparison:
    """Runs (or re-reads) every row; `summarise` and `format_table` turn them into the comparison."""

    def __init__(self, lm: LoadedModel, pair: PersonaPair, items: Sequence[Vignette], claims: Sequence[dict],
                 settings: CompareSettings, parts_dir: Path, log: Callable[[str], None] = print):
        self.lm, self.pair, self.items, self.claims = lm, pair, items, claims
        self.s, self.parts, self.log = settings, parts_dir, log
        self.cal_prompts = heldout_prompts()
        # Rows are cached by what they were computed from: model, personas, vignettes, claims and the
        # settings they use (one --out may see comparisons of several training directories).
        self.inputs = {"model": f"{lm.spec}@{lm.revision}:{lm.dtype}", "pair": [pair.pos, pair.neg],
                       "items": _digest([asdict(v) for v in items]), "claims": _digest(list(claims))}

    def _key(self, row_kind: str, label: str, source: str = "") -> str:
        used = {k: v for k, v in asdict(self.s).items() if k not in _NEVER + _NOT_FOR[row_kind]}
        if "calibrate" in used:  # as the row reads it: target and tolerance come from target_kl / rel_tol
            cal = asdict(self._cal_cfg())
            used["calibrate"] = {k: cal[k] for k in _KL_READS} if row_kind == "ws-fixed" else cal
        return _digest([used, self.inputs, label, source])

    def _cal_cfg(self):
        return replace(self.s.calibrate, target_kl=self.s.target_kl, tol=self.s.rel_tol * self.s.target_kl)

    def _cached(self, row_kind: str, label: str, run: Callable[[], MethodRow], source: str = "") -> MethodRow:
        key = self._key(row_kind, label, source)
        path = self.parts / f"{label.replace(':', '_').replace(' ', '_')}-{key}.json"
        if path.is_file():
            return MethodRow(**json.loads(path.read_text()))
        row = run()
        write_json(path, asdict(row))
        self.log(f"{row.label}: coeff {row.coeff}, p95 KL {row.kl_p95}")
        return row

    def _evaluate(self, row: MethodRow, *, steer=(), system=None) -> MethodRow:
        cfg = replace(self.s.eval, protocol=self.s.protocol)
        if system is not None:
            result = prompt_baseline(self.lm, system, self.items, cfg, dataset=self.s.dataset)
        else:
            result = evaluate(self.lm, self.items, cfg, dataset=self.s.dataset, steer=steer, desc=row.label)
        row.eval = result.to_dict()
        row.probe = yes_no_probe(self.lm, self.claims, system=system, steer=steer)
        return row

    def base(self) -> MethodRow:
        return self._cached("base", "base", lambda: self._evaluate(MethodRow("base", 0)))

    def prompt(self, sign: int) -> MethodRow:
        persona = self.pair.pos if sign > 0 else self.pair.neg
        return self._cached("prompt", MethodRow("prompt", sign).label,
                            lambda: self._evaluate(MethodRow("prompt", sign), system=persona))

    def _calibrated(self, row_kind: str, method: str, sign: int, target,
                    evaluate_at: Callable[[MethodRow, float], MethodRow], source: str = ""):
        def run() -> MethodRow:
            cal = calibrate(self.lm, target, self.cal_prompts, self._cal_cfg(), desc=f"calibrate {method}")
            return evaluate_at(MethodRow(method, sign, sign * cal.coeff, cal.stats.p95, cal.converged), cal.coeff)
        return self._cached(row_kind, MethodRow(method, sign).label, run, source)

    def _fixed(self, method: str, sign: int, target, alpha: float,
               evaluate_at: Callable[[MethodRow, float], MethodRow], source: str = ""):
        def run() -> MethodRow:
            stats = kl_at(self.lm, target, alpha, self.cal_prompts, self._cal_cfg())
            return evaluate_at(MethodRow(method, sign, sign * alpha, stats.p95, None), alpha)
        return self._cached("ws-fixed", MethodRow(method, sign).label, run, source)

    def _vector(self) -> SteeringVector:
        path = self.parts / f"vector-{_digest([self.s.n_contexts, self.inputs['model'], self.inputs['pair']])}" \
                            ".safetensors"
        if path.is_file():
            return SteeringVector.load(path)
        vec = extract(self.lm, self.pair.pos, self.pair.neg, contexts()[: self.s.n_contexts], ExtractConfig())
        vec.save(path)
        return vec

    def vector(self, sign: int) -> MethodRow:
        signed = self._vector() * sign
        return self._calibrated("vector", "vector", sign, signed,
                                lambda row, c: self._evaluate(row, steer=[SteerSpec(signed, c)]))

    def weights(self, delta: WeightDelta, sign: int) -> MethodRow:
        signed = delta.scaled(sign)

        def evaluate_at(row: MethodRow, alpha: float) -> MethodRow:
            with signed.applied(self.lm, alpha):
                return self._evaluate(row)
        if self.s.alpha is not None:
            return self._fixed(f"ws:{delta.kind}", sign, signed, self.s.alpha, evaluate_at, delta.digest)
        return self._calibrated("ws", f"ws:{delta.kind}", sign, signed, evaluate_at, delta.digest)

    def run(self, deltas: Sequence[WeightDelta]) -> list[MethodRow]:
        rows = [self.base()]
        for sign in self.s.signs if self.s.prompt else ():
            rows.append(self.prompt(sign))
        for sign in self.s.signs if self.s.vector else ():
            rows.append(self.vector(sign))
        for delta in deltas:
            for sign in self.s.signs:
                rows.append(self.weights(delta, sign))
        return rows


def summarise(rows: Sequence[MethodRow], axis: str | None, n_resamples: int = 2000) -> dict:
    """Every row against the base row: per-foundation deltas with CIs, pmass, probe shift."""
    base = next(r for r in rows if r.method == "base")
    out = []
    for row in rows:
        entry = {"label": row.label, "method": row.method, "sign": row.sign, "coeff": row.coeff,
                 "kl_p95": row.kl_p95, "converged": row.converged, "pmass": row.eval["summary"].get("pmass"),
                 "yes_no": row.probe["mean_log_ratio"], "seconds": row.eval.get("seconds")}
        if row is not base:
            cmp = compare(base.eval, row.eval, axis=axis, n_resamples=n_resamples)
            entry |= {"deltas": cmp["deltas"], "pmass_delta": cmp["pmass"], "axis_delta": cmp["axis_delta"],
                      "largest_off_target": cmp["largest_off_target"],
                      "yes_no_delta": probe_shift(base.probe, row.probe, n_resamples=n_resamples)}
        out.append(entry)
    return {"axis": axis, "protocol": base.eval["protocol"], "n_vignettes": len(base.eval["rows"]),
            "rows": out}


def _cell(d: dict | None) -> str:
    if d is None:
        return ""
    star = "*" if d["lo"] > 0 or d["hi"] < 0 else ""
    return f"{d['delta']:+.2f}±{(d['hi'] - d['lo']) / 2:.2f}{star}"


def format_table(summary: dict, markdown: bool = False) -> str:
    """One table: coefficient, KL, per-foundation deltas (± half 95% CI, * excludes 0), pmass, Yes/No."""
    short = [f[:4] for f in FOUNDATIONS]
    head = ["method", "coeff", "KL p95", *[s + ("(axis)" if f == summary["axis"] else "")
                                          for s, f in zip(short, FOUNDATIONS, strict=True)], "pmass", "Δpmass",
            "yes-no", "Δyes-no"]
    lines = []
    for e in summary["rows"]:
        deltas = {d["name"]: d for d in e.get("deltas", [])}
        cells = [e["label"], "" if e["coeff"] is None else f"{e['coeff']:+.3g}",
                 "" if e["kl_p95"] is None else f"{e['kl_p95']:.2f}",
                 *[_cell(deltas.get(f)) for f in FOUNDATIONS],
                 "" if e["pmass"] is None else f"{e['pmass']:.3f}", _cell(e.get("pmass_delta")),
                 f"{e['yes_no']:+.2f}", _cell(e.get("yes_no_delta"))]
        lines.append(cells)
    if markdown:
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(rows)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
    return "\n".join([fmt(head), *map(fmt, lines)])


def legend(summary: dict) -> str:
    unit = "F_nats" if summary["protocol"] == "forced-choice" else "logit(w)"
    return (f"{summary['protocol']}, {summary['n_vignettes']} rows; foundation cells: change vs base in {unit}, "
            "± half the paired-bootstrap 95% CI, * = CI excludes 0; yes-no: mean log P(Yes) - log P(No) on false "
            "claims (higher = more agreeable); + rows push towards the pos persona, - rows towards neg.")


def write_outputs(out: Path, summary: dict, settings: CompareSettings, extra: dict) -> None:
    write_json(out, {"settings": asdict(settings), **extra, **summary})
    write_text(out.with_suffix(".md"), legend(summary) + "\n\n" + format_table(summary, markdown=True) + "\n")
