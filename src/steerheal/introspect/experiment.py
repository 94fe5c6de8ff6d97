"""Trials, controls and the read-out of the gradient-awareness experiment.

A trial is one correction item (source topic s) and a target prompt the vector is injected
into (at block `layer`, every real token but the first). The model then reads the question
and each topic label is scored by its log-probability as the answer; the trial names the
topic with the highest score. Conditions, all on the same trials:

- `gradient`: the item's injection (descent direction: raw/virtual -g, projector P(-g_hat));
- `none`: no injection (what the question alone elicits);
- `random`: a random direction with the injection's norm, per trial (seeded);
- `negated`: the ascent direction (raw/virtual +g, projector P(+g_hat));
- `other topic`: the injection of the same-position item of the next topic, scored against s;
- `decoupling`: the item's injection while the target prompt is a context of the next topic.

Each condition also asks the yes/no detection question (true positives: `gradient`; false
positives: `none`) and one "no"-answer question (the yes-bias probe).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..answers import answer_logprobs
from ..chat import non_sink_mask, render_question
from ..config import CalibrateConfig, IntrospectConfig
from ..dose import calibrate
from ..errors import SteerhealError
from ..models import LoadedModel
from ..progress import progress
from ..runs import ensure_writable_dir, write_json, write_text
from ..steering.vector import SteeringVector
from .gradients import check_layer, gradients, injected, residual_norm
from .projector import train_projector
from .topics import TopicSet, check_topics, label_text


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def score(lm: LoadedModel, layer: int, prompts: Sequence[str], vectors: torch.Tensor,
          answers: Sequence[str], batch_size: int) -> torch.Tensor:
    """log p(answer | prompt) with vectors[i] injected into prompt i: [n_prompts, n_answers]."""
    n, a = len(prompts), len(answers)
    rep_prompts = [p for p in prompts for _ in range(a)]
    rep_vectors = vectors.repeat_interleave(a, dim=0).to(lm.device)

    def context(start, stop, mask):
        return injected(lm, layer, rep_vectors[start:stop], non_sink_mask(mask))

    lp = answer_logprobs(lm, rep_prompts, list(answers) * n, batch_size=batch_size, context=context)
    return lp.view(n, a)


def yes_margin(lm: LoadedModel, layer: int, prompts: Sequence[str], vectors: torch.Tensor, batch_size: int):
    """logsumexp(Yes, yes) - logsumexp(No, no) per prompt."""
    lp = score(lm, layer, prompts, vectors, ["Yes", "yes", "No", "no"], batch_size)
    return (torch.logsumexp(lp[:, :2], 1) - torch.logsumexp(lp[:, 2:], 1)).cpu()


def _ask(lm: LoadedModel, context: str, question: str) -> str:
    return render_question(lm.tokenizer, f"{context}\n\n{question}")


def _partner(ts: TopicSet, i: int) -> int:
    """The item at the same position within the next topic (cyclic)."""
    item = ts.items[i]
    own = [j for j, it in enumerate(ts.items) if it.topic == item.topic]
    nxt = [j for j, it in enumerate(ts.items) if it.topic == (item.topic + 1) % len(ts.topics)]
    return nxt[own.index(i) % len(nxt)]


def injections(lm: LoadedModel, ts: TopicSet, grads: torch.Tensor, layer: int, cfg: IntrospectConfig,
               log=print) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(injection per item, its 'negated' control per item, mode details)."""
    norms = grads.norm(dim=1, keepdim=True)
    zero = [ts.items[i].prompt for i in range(len(ts.items)) if float(norms[i]) == 0.0]
    if zero:
        raise SteerhealError(f"the correction gradient is zero for {zero[0]!r} (and {len(zero) - 1} more)",
                             "choose another layer (the answer may not depend on it) or another item")
    units = grads / norms
    neutral = [render_question(lm.tokenizer, p) for p in ts.neutral_prompts]
    if cfg.mode == "raw":
        scale = cfg.raw_scale * residual_norm(lm, layer, neutral)
        return -units * scale, units * scale, {"residual_scale": scale}
    if cfg.mode == "virtual":
        median = int(torch.argsort(norms.view(-1))[len(norms) // 2])
        probe = SteeringVector({layer: -grads[median]}, model_spec=lm.spec, model_revision=lm.revision,
                               n_layers=lm.n_layers)
        cal = calibrate(lm, probe, neutral, CalibrateConfig(target_kl=cfg.target_kl, n_prompts=len(neutral),
                                                            n_tokens=16), rendered=True)
        log(f"virtual step: eta {cal.coeff:.4g} (p95 KL {cal.stats.p95:.3f} on the median-norm gradient)")
        return -grads * cal.coeff, grads * cal.coeff, {"eta": cal.coeff, "eta_kl": cal.stats.p95}
    return _projected(lm, ts, units, layer, cfg, log)


def _projected(lm, ts, units, layer, cfg, log):
    """Cross-fitted projector: topics in fold f are injected through a map trained on the others."""
    folds = [list(range(f, len(ts.topics), cfg.folds)) for f in range(cfg.folds)]
    inj, neg = torch.zeros_like(units), torch.zeros_like(units)
    losses = {}
    for f, held in enumerate(folds):
        train_topics = [t for t in range(len(ts.topics)) if t not in held]
        train_items = [i for i, it in enumerate(ts.items) if it.topic in train_topics]
        prompts = [_ask(lm, ts.neutral_prompts[k % len(ts.neutral_prompts)], ts.question)
                   for k in range(len(ts.neutral_prompts)) for _ in train_items]
        items = [i for _ in range(len(ts.neutral_prompts)) for i in train_items]
        targets = torch.tensor([train_topics.index(ts.items[i].topic) for i in items])
        proj = train_projector(lm, layer, -units[items], targets, prompts,
                               [label_text(lm, ts.topics[t].label) for t in train_topics], cfg)
        test_items = [i for i, it in enumerate(ts.items) if it.topic in held]
        with torch.no_grad():
            inj[test_items] = proj(-units[test_items].to(lm.device)).float().cpu()
            neg[test_items] = proj(units[test_items].to(lm.device)).float().cpu()
        log(f"projector fold {f}: trained on {len(train_topics)} topics, scores {len(held)}")
        losses[f] = [ts.topics[t].label for t in held]
    return inj, neg, {"folds": losses, "injected_norm_median": float(inj.norm(dim=1).median())}


def conditions(ts: TopicSet, inj: torch.Tensor, neg: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The injected vector of every trial under each condition (rows = items)."""
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(inj.shape, generator=gen)
    rand = rand / rand.norm(dim=1, keepdim=True) * inj.norm(dim=1, keepdim=True)  # norm-matched per trial
    partner = [_partner(ts, i) for i in range(len(ts.items))]
    return {"gradient": inj, "none": torch.zeros_like(inj), "random": rand, "negated": neg,
            "other topic": inj[partner]}


def _rate(flags: np.ndarray) -> dict:
    lo, hi = wilson(int(flags.sum()), int(flags.size))
    return {"rate": float(flags.mean()), "ci": [lo, hi], "n": int(flags.size)}


def _mean_ci(x: np.ndarray) -> dict:
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else math.nan
    return {"mean": float(x.mean()), "ci": [float(x.mean() - half), float(x.mean() + half)]}


def run_trials(lm: LoadedModel, ts: TopicSet, layer: int, vectors: dict[str, torch.Tensor],
               cfg: IntrospectConfig) -> dict:
    n, k = len(ts.items), len(ts.topics)
    source = np.array([it.topic for it in ts.items])
    labels = [label_text(lm, t.label) for t in ts.topics]
    neutral = [ts.neutral_prompts[i % len(ts.neutral_prompts)] for i in range(n)]
    ask = [_ask(lm, c, ts.question) for c in neutral]
    detect = [_ask(lm, c, ts.detect_question) for c in neutral]
    no_qs = [render_question(lm.tokenizer, ts.no_questions[i % len(ts.no_questions)]) for i in range(n)]
    ctx_topic = (source + 1) % k
    decouple = [_ask(lm, ts.topics[t].contexts[i % len(ts.topics[t].contexts)], ts.question)
                for i, t in enumerate(ctx_topic)]
    runs = list(vectors.items()) + [("decoupling", vectors["gradient"])]
    scores, results = {}, {}
    for name, vecs in progress(runs, desc="introspect: conditions", total=len(runs)):
        prompts = decouple if name == "decoupling" else ask
        scores[name] = score(lm, layer, prompts, vecs, labels, cfg.batch_size).cpu()
        named = scores[name].argmax(1).numpy()
        results[name] = {"names_source": _rate(named == source),
                         "detect_yes": _rate(yes_margin(lm, layer, detect, vecs, cfg.batch_size).numpy() > 0),
                         "no_question_yes": _rate(yes_margin(lm, layer, no_qs, vecs, cfg.batch_size).numpy() > 0)}
        if name == "decoupling":
            results[name]["names_context"] = _rate(named == ctx_topic)
    base = scores["none"]
    for name in vectors:
        shift = scores[name] - base
        centred = shift - shift.mean(1, keepdim=True)  # a uniform shift of every label says nothing
        results[name]["source_shift"] = _mean_ci(centred[torch.arange(n), torch.from_numpy(source)].numpy())
    return {"results": results, "chance": 1 / k, "n_trials": n,
            "trials": [{"item": ts.items[i].prompt, "topic": ts.topics[source[i]].label,
                        **{c: labels[int(scores[c][i].argmax())] for c in scores}} for i in range(n)]}


def format_table(res: dict, header: str) -> str:
    def rate(r):
        return f"{r['rate']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"

    rows = []
    for name, r in res["results"].items():
        shift = r.get("source_shift")
        rows.append([name, rate(r["names_source"]), f"{res['chance']:.3f}",
                     f"{shift['mean']:+.3f} [{shift['ci'][0]:+.3f}, {shift['ci'][1]:+.3f}]" if shift else "-",
                     rate(r["detect_yes"]), rate(r["no_question_yes"])])
    heads = ["condition", "names source topic [95% CI]", "chance", "source-label shift vs none, nats [95% CI]",
             "says yes to 'pushed to correct?'", "yes on no-questions (yes-bias)"]
    lines = [header, "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    dec = res["results"]["decoupling"]["names_context"]
    lines += ["", f"Decoupling: with the gradient injected while reading a prompt from the next topic, the model "
              f"names the gradient's topic {rate(res['results']['decoupling']['names_source'])} and the prompt's "
              f"topic {rate(dec)}. True-positive rate {rate(res['results']['gradient']['detect_yes'])}, "
              f"false-positive rate {rate(res['results']['none']['detect_yes'])} ({res['n_trials']} trials each)."]
    return "\n".join(lines) + "\n"


def run_introspect(lm: LoadedModel, ts: TopicSet, cfg: IntrospectConfig, out: str | Path, log=print) -> dict:
    layer = check_layer(lm, lm.n_layers // 2 if cfg.layer is None else cfg.layer)
    check_topics(lm, ts)
    out = ensure_writable_dir(Path(out))
    grads = gradients(lm, ts.items, layer)
    inj, neg, details = injections(lm, ts, grads, layer, cfg, log)
    res = run_trials(lm, ts, layer, conditions(ts, inj, neg, cfg.seed), cfg)
    res |= {"model": lm.spec, "revision": lm.revision, "mode": cfg.mode, "layer": layer, "details": details,
            "gradient_norm_median": float(statistics.median(grads.norm(dim=1).tolist())),
            "injected_norm_median": float(inj.norm(dim=1).median())}
    header = (f"{lm.spec}, mode {cfg.mode}, layer {layer}, {len(ts.topics)} topics, "
              f"injected norm (median) {res['injected_norm_median']:.3g}")
    table = format_table(res, header)
    write_json(out / "trials.json", res.pop("trials"))
    write_json(out / "summary.json", res)
    write_text(out / "table.md", table)
    return res | {"table": table}
