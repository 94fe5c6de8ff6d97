"""Heal step cost: seconds per step and peak extra memory, nll vs kl_rev with each aggregator.

Each configuration runs in its own subprocess (so peak memory is not polluted by the others)
on the same batch: 4 completions of 128 tokens. Peak memory is the process's peak resident
set size minus its resident size just before the first step (on CUDA: peak allocated bytes).
"""

from __future__ import annotations

import json
import subprocess
import sys

from .common import table

# (reg, agg, split): split=1 is a step that also logs each term's gradient norm (a second backward
# pass; every grad_norm_every-th step, default 10), split=0 an ordinary step (one backward).
CONFIGS = [("nll", "mean", 0), ("kl_rev", "mean", 0), ("kl_rev", "rmse", 0), ("kl_rev", "p95", 0), ("kl_rev", "max", 0),
           ("kl_rev", "rmse", 1)]

_CHILD = r"""
import json, resource, sys, time, torch
from steerheal.config import HealConfig
from steerheal.heal.adapters import AdapterHistory, LoraSpec
from steerheal.heal.data import Example, collate
from steerheal.heal.train import train_step
from steerheal.models import load_model
spec, reg, agg, steps, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
split = sys.argv[6] == "1"
lm = load_model(spec) if spec != "tiny-random-llama" else load_model(spec, "cpu", torch.float32)
hist = AdapterHistory(lm)
cfg = HealConfig(reg=reg, agg=agg, tau=0.0)
hist.new_round(LoraSpec(rank=cfg.lora_rank, alpha=cfg.lora_alpha, layer_band=cfg.lora_band))
params = hist.trainable_parameters()
opt = torch.optim.AdamW(params, lr=cfg.lr)
g = torch.Generator().manual_seed(0)
low, high = (300, 5000) if spec != "tiny-random-llama" else (32, 250)  # ordinary (non-special) tokens
ids = torch.randint(low, high, (4, length), generator=g).tolist()
batch = collate([Example(r, length // 4) for r in ids], lm.tokenizer.pad_token_id).to(lm.device)
lm.model.train()
def step():
    train_step(hist, batch, cfg, 0, params, opt, split_grads=split)
step()
cuda = lm.device.type == "cuda"
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
t0 = time.perf_counter()
for _ in range(steps):
    step()
if cuda:
    torch.cuda.synchronize()
sec = (time.perf_counter() - t0) / steps
peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": sec, "peak_extra_mb": max(peak - base, 0) / 2**20, "tokens": 4 * length}))
"""


def run(spec: str, steps: int = 3, length: int = 128) -> tuple[str, list[dict]]:
    rows = []
    for reg, agg, split in CONFIGS:
        out = subprocess.run([sys.executable, "-c", _CHILD, spec, reg, agg, str(steps), str(length), str(split)],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"reg": reg, "agg": agg, "grad_norms": "split (logging step)" if split else "combined", **res})
    nll = rows[0]
    text = table(["reg", "agg", "backward", "s/step", "tok/s", "time vs nll (target <= 2.2)", "peak extra MB",
                  "memory vs nll (target <= 1.5)"],
                 [[r["reg"], r["agg"] if r["reg"] != "nll" else "-", r["grad_norms"], f"{r['seconds']:.3f}",
                   f"{r['tokens'] / r['seconds']:.0f}", f"{r['seconds'] / nll['seconds']:.2f}",
                   f"{r['peak_extra_mb']:.0f}", f"{r['peak_extra_mb'] / max(nll['peak_extra_mb'], 1e-9):.2f}"]
                  for r in rows])
    return text, rows
