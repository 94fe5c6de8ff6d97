"""How the two heavy stages of a round scale: generation and one heal epoch.

One factor at a time from a base point (64-token completions, 16 completions): completion
length 64/128/256 at 16 completions, and 16/64/256 completions at 64 tokens; per model.
Generation decodes greedily with a forced length (min = max new tokens) at the sampler's
default batch size; heal trains one epoch of a fresh LoRA (kl_rev, rmse: the loop's default
loss, batch 8) on exactly those completions. A log-log plot of seconds against generated
tokens (completions x length) shows the exponents; the fitted slope is printed per series.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from steerheal import data
from steerheal.chat import encode, render_prompt
from steerheal.config import HealConfig
from steerheal.generate import default_batch_size
from steerheal.heal.adapters import AdapterHistory
from steerheal.heal.data import Example
from steerheal.heal.train import heal_round
from steerheal.models import load_model

from .common import table


@torch.no_grad()
def _generate(lm, texts, length):
    out, bs = [], default_batch_size(lm)
    for s in range(0, len(texts), bs):
        batch = encode(lm.tokenizer, texts[s:s + bs], 1024, lm.device)
        seqs = lm.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                 max_new_tokens=length, min_new_tokens=length, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=lm.tokenizer.pad_token_id)
        for row, mask in zip(seqs.tolist(), batch.attention_mask.tolist(), strict=True):
            pad = len(mask) - sum(mask)
            out.append(Example(row[pad:], sum(mask)))
    return out


def _heal(lm, examples, length):
    history = AdapterHistory(lm)
    cfg = HealConfig(epochs=1, batch_size=8, max_len=length + 512, val_frac=0.0, grad_norm_every=0)
    t0 = time.perf_counter()
    heal_round(history, examples, cfg, rounds_baked=0)
    seconds = time.perf_counter() - t0
    lm.model = history.peft_model.unload()  # drop the adapter: the next point starts from the base
    return seconds


def measure(lm, length: int, n: int) -> dict:
    prompts = (data.contexts() * (n // len(data.contexts()) + 1))[:n]
    texts = [render_prompt(lm.tokenizer, p) for p in prompts]
    t0 = time.perf_counter()
    examples = _generate(lm, texts, length)
    gen = time.perf_counter() - t0
    return {"model": lm.spec, "length": length, "n": n, "tokens": n * length, "generate_s": gen,
            "heal_s": _heal(lm, examples, length)}


def slope(rows: list[dict], key: str) -> float:
    xs = [math.log(r["tokens"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def plot(rows: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "generate_s", "generation"), (axes[1], "heal_s", "heal (1 epoch)")):
        for model in dict.fromkeys(r["model"] for r in rows):
            for sweep, marker in (("length", "o-"), ("n", "s--")):
                pts = sorted((r for r in rows if r["model"] == model and r["sweep"] in (sweep, "base")),
                             key=lambda r: r["tokens"])
                ax.loglog([r["tokens"] for r in pts], [r[key] for r in pts], marker,
                          label=f"{model}, vary {'length' if sweep == 'length' else 'count'} "
                                f"(slope {slope(pts, key):.2f})")
        ax.set_title(title)
        ax.set_xlabel("generated tokens (completions x length)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(specs=("tiny-random-llama", "smollm2-135m"), lengths=(64, 128, 256), counts=(16, 64, 256),
        base=(64, 16), plot_path: str | Path | None = None) -> tuple[str, list[dict]]:
    rows = []
    for spec in specs:
        lm = load_model(spec, "cpu", torch.float32) if spec.startswith("tiny") else load_model(spec)
        measure(lm, 8, 2)  # warm-up: first-call costs (allocator, PEFT wrapping) are not scaling
        points = [(length, base[1], "length") for length in lengths] + \
            [(base[0], n, "n") for n in counts if n != base[1]]
        for length, n, sweep in points:
            rows.append(measure(lm, length, n) | {"sweep": "base" if (length, n) == base else sweep})
    if plot_path:
        plot(rows, plot_path)
    text = table(["model", "length", "completions", "tokens", "generate s", "gen tok/s", "heal s", "heal tok/s"],
                 [[r["model"], r["length"], r["n"], r["tokens"], f"{r['generate_s']:.2f}",
                   f"{r['tokens'] / r['generate_s']:.0f}", f"{r['heal_s']:.2f}", f"{r['tokens'] / r['heal_s']:.0f}"]
                  for r in rows])
    return text, rows
