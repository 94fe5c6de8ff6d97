"""tiny-mfv evaluation: forced-choice and json-bool log-probability readouts.

forced-choice: the model names which foundation a vignette violates, from the 7 options in
the prompt; scored in several option orders (forward + reversed by default, or all cyclic
rotations) and averaged: score_f = mean over orders of log p(label of f), p = softmax(score).
pmass = mean over orders of the total probability on the allowed labels. Per foundation
`F_nats = log(mean over vignettes of p[F])`; top-1 accuracy against the human majority.

json-bool: for each vignette and condition, "is it wrong" and "is it acceptable" with the
answer prefilled up to the JSON value; P(true), P(false) summed over every surface form.
Frames are combined in log-odds: with l = log P(true) - log P(false) per frame,
w = sigmoid((l_wrong - l_accept) / 2), so a constant bias towards "true" cancels exactly.
The probability average of DESIGN.md, (p_true(wrong) + 1 - p_true(accept)) / 2, cancels such a
bias only to first order; it is reported too as `wrongness_prob`. Per foundation we report
mean w and mean logit(clip(w, .01, .99)).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..chat import render_prompt
from ..config import EvalConfig
from ..errors import SteerhealError
from ..models import LoadedModel
from ..steering.hooks import SteerSpec
from .scoring import score_candidates
from .templates import ForcedChoiceTemplate, JsonBoolTemplate, load_template
from .think import with_thoughts
from .vignettes import FOUNDATIONS, Vignette


@dataclass
class EvalResult:
    protocol: str
    model: str
    dataset: str
    config: dict
    summary: dict
    rows: list[dict]
    prompts: list[str]  # the first prompts exactly as scored
    seconds: float
    meta: dict = field(default_factory=dict)  # adapter, vector, coeff, ...

    def to_dict(self) -> dict:
        return asdict(self)


def option_orders(kind: str) -> list[list[str]]:
    fwd = list(FOUNDATIONS)
    if kind == "cyclic":
        return [fwd[k:] + fwd[:k] for k in range(len(fwd))]
    return [fwd, fwd[::-1]]


def _forced_choice(lm: LoadedModel, items: Sequence[Vignette], cfg: EvalConfig, tpl: ForcedChoiceTemplate,
                   steer: Sequence[SteerSpec], desc: str | None):
    orders = option_orders(cfg.orders)
    variants = [v.format(label=lab) for lab in tpl.labels for v in tpl.label_variants]
    n_var = len(tpl.label_variants)
    lp_by_f = torch.empty(len(orders), len(items), len(FOUNDATIONS))
    pmass = torch.empty(len(orders), len(items))
    prompts: list[str] = []
    for o, order in enumerate(orders):
        base = [render_prompt(lm.tokenizer, tpl.user_message(order, v.texts["other_violate"]), cfg.system)
                for v in items]
        texts, _ = with_thoughts(lm, base, cfg.think, tpl.answer_prefill, steer=steer, batch_size=cfg.batch_size)
        prompts += texts[:3] if o == 0 else texts[:1]
        logp = score_candidates(lm, texts, variants, batch_size=cfg.batch_size, steer=steer,
                                desc=desc and f"{desc} order {o + 1}/{len(orders)}")
        by_pos = torch.logsumexp(logp.view(len(items), len(tpl.labels), n_var), dim=-1)  # [n, 7]
        pmass[o] = by_pos.exp().sum(-1)
        index = torch.tensor([order.index(f) for f in FOUNDATIONS])
        lp_by_f[o] = by_pos[:, index]
    score = lp_by_f.mean(0)
    p = torch.softmax(score, dim=-1)
    rows = []
    for i, v in enumerate(items):
        top = FOUNDATIONS[int(p[i].argmax())]
        rows.append({"id": v.id, "foundation": v.foundation, "majority": v.majority, "top1": top,
                     "correct": top == v.majority, "pmass": float(pmass[:, i].mean()),
                     "p": {f: float(p[i, k]) for k, f in enumerate(FOUNDATIONS)},
                     "score": {f: float(score[i, k]) for k, f in enumerate(FOUNDATIONS)},
                     "pmass_by_order": pmass[:, i].tolist()})
    return rows, forced_choice_summary(rows), prompts


def forced_choice_summary(rows: list[dict]) -> dict:
    n = len(rows)
    mean_p = {f: sum(r["p"][f] for r in rows) / n for f in FOUNDATIONS}
    return {"n": n, "pmass": sum(r["pmass"] for r in rows) / n,
            "accuracy": sum(r["correct"] for r in rows) / n,
            "mean_p": mean_p, "nats": {f: math.log(max(mean_p[f], 1e-30)) for f in FOUNDATIONS}}


def _json_bool(lm: LoadedModel, items: Sequence[Vignette], cfg: EvalConfig, tpl: JsonBoolTemplate,
               steer: Sequence[SteerSpec], desc: str | None):
    jobs = [(v, cond, frame) for v in items for cond in ("other_violate", "self_violate") if cond in v.texts
            for frame in ("wrong", "accept")]
    base = [render_prompt(lm.tokenizer, tpl.user_message(frame, v.texts[cond]), cfg.system) for v, cond, frame in jobs]
    texts, _ = with_thoughts(lm, base, cfg.think, tpl.answer_prefill, steer=steer, batch_size=cfg.batch_size)
    cands = list(tpl.true_variants) + list(tpl.false_variants)
    probs = score_candidates(lm, texts, cands, batch_size=cfg.batch_size, steer=steer, desc=desc).exp()
    n_true = len(tpl.true_variants)
    p_t, p_f = probs[:, :n_true].sum(-1).double(), probs[:, n_true:].sum(-1).double()
    mass = p_t + p_f
    log_odds = p_t.clamp(min=1e-300).log() - p_f.clamp(min=1e-300).log()
    by_key: dict[tuple[str, str], dict] = {}
    for k, (v, cond, frame) in enumerate(jobs):
        rec = by_key.setdefault((v.id, cond), {"id": v.id, "foundation": v.foundation, "condition": cond})
        rec[f"p_true_{frame}"] = float(p_t[k] / mass[k].clamp(min=1e-300))
        rec[f"log_odds_{frame}"] = float(log_odds[k])
        rec[f"pmass_{frame}"] = float(mass[k])
    rows = []
    for rec in by_key.values():
        w = 1 / (1 + math.exp(-(rec["log_odds_wrong"] - rec["log_odds_accept"]) / 2))
        wc = min(max(w, 0.01), 0.99)
        rows.append({**rec, "wrongness": w, "logit_w": math.log(wc / (1 - wc)),
                     "wrongness_prob": (rec["p_true_wrong"] + 1 - rec["p_true_accept"]) / 2,
                     "pmass": (rec["pmass_wrong"] + rec["pmass_accept"]) / 2})
    return rows, json_bool_summary(rows), texts[:3]


def json_bool_summary(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows), "pmass": sum(r["pmass"] for r in rows) / len(rows), "by_condition": {}}
    for cond in ("other_violate", "self_violate"):
        sub = [r for r in rows if r["condition"] == cond]
        if not sub:
            continue
        per = {}
        for f in FOUNDATIONS:
            fr = [r for r in sub if r["foundation"] == f]
            if fr:
                per[f] = {"n": len(fr), "wrongness": sum(r["wrongness"] for r in fr) / len(fr),
                          "logit_w": sum(r["logit_w"] for r in fr) / len(fr)}
        out["by_condition"][cond] = per
    other, self_ = out["by_condition"].get("other_violate", {}), out["by_condition"].get("self_violate", {})
    out["gap_other_minus_self"] = {f: other[f]["logit_w"] - self_[f]["logit_w"] for f in other if f in self_}
    a = torch.tensor([r["p_true_wrong"] for r in rows])
    b = torch.tensor([r["p_true_accept"] for r in rows])
    # Healthy readouts anti-correlate: "wrong" and "acceptable" should get opposite answers.
    out["frame_correlation"] = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if len(rows) > 2 else float("nan")
    return out


def evaluate(lm: LoadedModel, items: Sequence[Vignette], cfg: EvalConfig | None = None, *,
             dataset: str = "own", steer: Sequence[SteerSpec] = (), desc: str | None = None,
             meta: dict | None = None) -> EvalResult:
    """Run one protocol over `items`; every number is a log-probability readout (no sampling)."""
    cfg = cfg or EvalConfig()
    if not items:
        raise SteerhealError("no vignettes to evaluate", "check the dataset name, --data-dir and --limit")
    tpl = load_template(cfg.protocol, cfg.template)
    t0 = time.perf_counter()
    run = _forced_choice if cfg.protocol == "forced-choice" else _json_bool
    rows, summary, prompts = run(lm, items, cfg, tpl, steer, desc)
    return EvalResult(protocol=cfg.protocol, model=lm.spec, dataset=dataset, config=asdict(cfg), summary=summary,
                      rows=rows, prompts=prompts, seconds=time.perf_counter() - t0, meta=dict(meta or {}))


def prompt_baseline(lm: LoadedModel, persona: str, items: Sequence[Vignette], cfg: EvalConfig | None = None,
                    **kwargs) -> EvalResult:
    """The prompting baseline: the same evaluation with `persona` as the system prompt."""
    from dataclasses import replace

    cfg = replace(cfg or EvalConfig(), system=persona)
    meta = {**kwargs.pop("meta", {}), "baseline": "prompt", "persona": persona}
    return evaluate(lm, items, cfg, meta=meta, **kwargs)
