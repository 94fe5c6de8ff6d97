"""How the two heavy stages of a round scale: generation and one heal epoch.

One factor at a time: completion length 64/128/256 at 8 completions, and 16/64/256
completions at 8 tokens each (short completions keep the 256-completion point inside the
suite's 15-minute budget; it still generates for, and trains one heal epoch on, 256
prompts). Both sweeps run on the tiny model and the embedded one; model size is compared at the 64 x 8 point across the
tiny model, the embedded SmolLM2-135M and the 270M Gemma base from PyPI (`gemma3-270m`; a base
model, so its prompts are the plain context texts after its BOS token, not a chat template).
Generation decodes greedily with a forced length (min = max new tokens) at the sampler's
default batch size; heal trains one epoch of a fresh LoRA (kl_rev, rmse: the loop's default
loss, batch 8) on exactly those completions. A log-log plot of seconds against generated
tokens (completions x length) shows the exponents, with the fitted slope per series, and a
third panel plots seconds against parameters at the 64 x 8 point.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from steerheal import data
from steerheal.chat import encode, has_chat_template, render_prompt
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
    chat = has_chat_template(lm.tokenizer)
    texts = [render_prompt(lm.tokenizer, p) if chat else (lm.tokenizer.bos_token or "") + p for p in prompts]
    t0 = time.perf_counter()
    examples = _generate(lm, texts, length)
    gen = time.perf_counter() - t0
    params = sum(p.numel() for p in lm.model.parameters())
    return {"model": lm.spec, "params": params, "length": length, "n": n, "tokens": n * length,
            "generate_s": gen, "heal_s": _heal(lm, examples, length)}


def slope(rows: list[dict], key: str, x: str = "tokens") -> float:
    """Least-squares exponent of `key` against `x` on log-log axes."""
    xs = [math.log(r[x]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def plot(rows: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, key, title in ((axes[0], "generate_s", "generation"), (axes[1], "heal_s", "heal (1 epoch)")):
        for model in dict.fromkeys(r["model"] for r in rows):
            for sweep, marker in (("length", "o-"), ("n", "s--")):
                pts = sorted((r for r in rows if r["model"] == model and sweep in r["sweeps"]),
                             key=lambda r: r["tokens"])
                if len(pts) < 2:
                    continue
                ax.loglog([r["tokens"] for r in pts], [r[key] for r in pts], marker,
                          label=f"{model}, vary {'length' if sweep == 'length' else 'count'} "
                                f"(slope {slope(pts, key):.2f})")
        ax.set_title(title)
        ax.set_xlabel("generated tokens (completions x length)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    sized = sorted((r for r in rows if "size" in r["sweeps"]), key=lambda r: r["params"])
    for key, marker, label in (("generate_s", "o-", "generation"), ("heal_s", "s--", "heal (1 epoch)")):
        axes[2].loglog([r["params"] for r in sized], [r[key] for r in sized], marker,
                       label=f"{label} (slope {slope(sized, key, x='params'):.2f})")
    for r in sized:
        axes[2].annotate(r["model"], (r["params"], r["generate_s"]), fontsize=7)
    axes[2].set_title("model size (64 tokens x 8 completions)")
    axes[2].set_xlabel("parameters")
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7)
    axes[0].set_ylabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_points(lengths, counts, length_base: int, count_base: int, size: bool) -> dict:
    """{(length, n): names of the sweeps the point belongs to}; a shared point is measured once."""
    points: dict[tuple[int, int], set] = {}
    for length in lengths:
        points.setdefault((length, length_base), set()).add("length")
    for n in counts:
        points.setdefault((count_base, n), set()).add("n")
    if size:
        points.setdefault((lengths[0], length_base), set()).add("size")
    return points


def run(sweep_specs=("tiny-random-llama", "smollm2-135m"), size_specs=("gemma3-270m",), lengths=(64, 128, 256),
        counts=(16, 64, 256), length_base: int = 8, count_base: int = 8,
        plot_path: str | Path | None = None) -> tuple[str, list[dict]]:
    """`length_base`: completions per point of the length sweep; `count_base`: tokens per point
    of the count sweep. Models in `size_specs` run only the size point (lengths[0] x length_base)."""
    rows = []
    for spec in dict.fromkeys(sweep_specs + size_specs):
        lm = load_model(spec, "cpu", torch.float32) if spec.startswith("tiny") else load_model(spec)
        measure(lm, 8, 2)  # warm-up: first-call costs (allocator, PEFT wrapping) are not scaling
        if spec in sweep_specs:
            points = sweep_points(lengths, counts, length_base, count_base, size=True)
        else:
            points = {(lengths[0], length_base): {"size"}}
        for (length, n), sweeps in points.items():
            rows.append(measure(lm, length, n) | {"sweeps": sorted(sweeps)})
        del lm
    if plot_path:
        plot(rows, plot_path)
    text = table(["model", "params M", "length", "completions", "tokens", "sweeps", "generate s", "gen tok/s",
                  "heal s", "heal tok/s"],
                 [[r["model"], f"{r['params'] / 1e6:.1f}", r["length"], r["n"], r["tokens"], "+".join(r["sweeps"]),
                   f"{r['generate_s']:.2f}", f"{r['tokens'] / r['generate_s']:.0f}", f"{r['heal_s']:.2f}",
                   f"{r['tokens'] / r['heal_s']:.0f}"] for r in rows])
    slopes = [[model, sweep, f"{slope(pts, 'generate_s'):.2f}", f"{slope(pts, 'heal_s'):.2f}"]
              for model in dict.fromkeys(r["model"] for r in rows) for sweep in ("length", "n")
              if len(pts := [r for r in rows if r["model"] == model and sweep in r["sweeps"]]) > 1]
    sized = [r for r in rows if "size" in r["sweeps"]]
    if len(sized) > 1:
        slopes.append(["all", "size (vs parameters)", f"{slope(sized, 'generate_s', x='params'):.2f}",
                       f"{slope(sized, 'heal_s', x='params'):.2f}"])
    text += "\n\nFitted log-log slopes (1.0 = linear):\n\n" + table(
        ["model", "sweep", "generation", "heal"], slopes)
    return text, rows
