"""Filters: scorers (one number per completion) plus gates (one threshold each).

Scorers: tail perplexity under the *original* model (last 25% of completion tokens), word and
character n-gram repetition, narration phrases (the completion talks about having the trait
instead of acting it), refusal / "as an AI" phrases, and an optional judge plugin (any
callable mapping texts to numbers). The result keeps every score and which gate dropped what.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from .chat import pad_left
from .config import FilterConfig
from .generate import Completion
from .models import LoadedModel

Judge = Callable[[list[str]], list[float]]


def ngram_share(items: Sequence[str], n: int) -> float:
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return Counter(grams).most_common(1)[0][1] / len(grams) if grams else 0.0


def repetition(text: str) -> float:
    """max over n in {2,3,4} of the most common n-gram's share, over words and over characters."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    chars = list(re.sub(r"\s+", " ", text.lower()))
    return max([ngram_share(words, n) for n in (2, 3, 4)] + [ngram_share(chars, n) for n in (2, 3, 4)])


def phrase_hits(text: str, phrases: Sequence[str]) -> int:
    low = " ".join(text.lower().split()).replace("\u2019", "'")
    return sum(low.count(p) for p in phrases)


@torch.no_grad()
def tail_perplexity(lm: LoadedModel, records: Sequence[Completion], tail_frac: float = 0.25,
                    batch_size: int = 16, original=None) -> list[float]:
    """exp(mean NLL) of the last `tail_frac` of each completion's tokens under the original model.

    `original` is a zero-argument factory of a context manager that gates adapters off (e.g.
    `lambda: history.reference("base")`); steering hooks are never active here.
    """
    out: list[float] = []
    for s in range(0, len(records), batch_size):
        chunk = records[s:s + batch_size]
        rows = [lm.tokenizer(r.prompt_text, add_special_tokens=False)["input_ids"] + r.token_ids for r in chunk]
        batch = pad_left(rows, lm.tokenizer.pad_token_id, lm.device)
        with original() if original else nullcontext():
            logits = lm.model(**batch.model_inputs()).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
        W = batch.input_ids.shape[1]
        for b, r in enumerate(chunk):
            n = len(r.token_ids)
            if n == 0:
                out.append(float("inf"))
                continue
            k = max(1, math.ceil(tail_frac * n))
            out.append(float(nll[b, W - 1 - k: W - 1].mean().exp()))
    return out


@dataclass
class FilterReport:
    scores: list[dict]
    kept: list[int]
    dropped_by: dict[str, int] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        return len(self.kept) / len(self.scores) if self.scores else 0.0

    def to_dict(self) -> dict:
        return {"kept": self.kept, "dropped_by": self.dropped_by, "pass_rate": self.pass_rate, "scores": self.scores}


def filter_completions(lm: LoadedModel, records: Sequence[Completion], cfg: FilterConfig, *,
                       narration: Sequence[str] = (), refusals: Sequence[str] = (), judge: Judge | None = None,
                       original=None, batch_size: int = 16) -> FilterReport:
    """Score every completion and apply the gates; a completion may fail several gates."""
    texts = [r.completion for r in records]
    ppl = tail_perplexity(lm, records, cfg.tail_frac, batch_size, original) if cfg.max_tail_ppl is not None \
        else [float("nan")] * len(records)
    judged = list(judge(texts)) if judge is not None else [float("nan")] * len(records)
    scores, kept, dropped = [], [], Counter()
    for i, (r, text) in enumerate(zip(records, texts, strict=True)):
        s = {"tail_ppl": ppl[i], "repetition": repetition(text), "narration": phrase_hits(text, narration),
             "refusal": phrase_hits(text, refusals), "judge": judged[i], "n_tokens": len(r.token_ids)}
        gates = []
        if s["n_tokens"] < cfg.min_tokens:
            gates.append("empty")
        if cfg.max_tail_ppl is not None and not s["tail_ppl"] <= cfg.max_tail_ppl:
            gates.append("tail_ppl")
        if cfg.max_repetition is not None and s["repetition"] > cfg.max_repetition:
            gates.append("repetition")
        if cfg.max_narration is not None and s["narration"] > cfg.max_narration:
            gates.append("narration")
        if (cfg.refusal == "drop" and s["refusal"] > 0) or (cfg.refusal == "require" and s["refusal"] == 0):
            gates.append("refusal")
        if judge is not None and cfg.max_judge is not None and not s["judge"] <= cfg.max_judge:
            gates.append("judge")
        s["dropped_by"] = gates
        dropped.update(gates)
        scores.append(s)
        if not gates:
            kept.append(i)
    return FilterReport(scores=scores, kept=kept, dropped_by=dict(dropped))
