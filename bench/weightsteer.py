"""Weight steering cost per adapter type: training step time, dW storage, applying dW.

For each type, theta+ and theta- are trained on two different sets of 16 random-token
completions (96 tokens each; 1 epoch, batch 8) from freshly loaded bases, exactly as
`weight-steer train` does. Reported: median seconds per optimiser step, dW on disk (low-rank
parts as factors) against the dense size, and the cost of entering and leaving
`WeightDelta.applied` (median of repeats) with the bytes of its backup: only the touched
tensors are copied, never the whole model.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from steerheal.config import WeightSteerConfig
from steerheal.generate import Completion
from steerheal.models import load_model
from steerheal.weightsteer.kinds import KINDS
from steerheal.weightsteer.train import train_delta

from .common import table


def _records(lm, n: int, length: int, seed: int) -> list[Completion]:
    g = torch.Generator().manual_seed(seed)
    low, high = (300, 5000) if lm.tokenizer.vocab_size > 5000 else (32, 250)  # ordinary tokens
    ids = torch.randint(low, high, (n, length), generator=g).tolist()
    return [Completion(prompt="Tell me something.", completion="", token_ids=r, finished=False) for r in ids]


def _apply_seconds(lm, delta, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with delta.applied(lm, 1.0):
            pass
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(spec: str, kinds=KINDS, n: int = 16, length: int = 96, repeats: int = 3) -> tuple[str, list[dict]]:
    load = (lambda: load_model(spec, "cpu", torch.float32)) if spec.startswith("tiny") else (lambda: load_model(spec))
    lm = load()
    model_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    cfg = WeightSteerConfig(epochs=1, batch_size=8, max_len=length + 32)
    samples = {"pos": _records(lm, n, length, 1), "neg": _records(lm, n, length, 2)}
    params = dict(lm.model.named_parameters())
    rows = []
    for kind in kinds:
        delta, sides = train_delta(load, kind, samples, cfg, info={"model": lm.spec, "revision": lm.revision})
        steps = [s.seconds / max(len(s.losses), 1) for s in sides]
        with tempfile.TemporaryDirectory() as tmp:
            disk = delta.save(Path(tmp) / "dW.safetensors").stat().st_size
        dense = sum(params[n].numel() * 4 for n in delta.names)
        backup = sum(params[n].numel() * params[n].element_size() for n in delta.names)
        rows.append({"kind": kind, "step_s": statistics.median(steps), "trainable": sides[0].n_trainable,
                     "disk_mb": disk / 1e6, "dense_mb": dense / 1e6, "factored": len(delta.factors),
                     "tensors": len(delta.names), "apply_s": _apply_seconds(lm, delta, repeats),
                     "backup_mb": backup / 1e6, "model_mb": model_bytes / 1e6})
    text = table(["type", "s/step", "trainable params", "dW on disk MB", "dense fp32 MB", "factored tensors",
                  "apply+restore s", "backup MB", "backup / model"],
                 [[r["kind"], f"{r['step_s']:.3f}", f"{r['trainable']:,}", f"{r['disk_mb']:.1f}",
                   f"{r['dense_mb']:.1f}", f"{r['factored']}/{r['tensors']}", f"{r['apply_s']:.3f}",
                   f"{r['backup_mb']:.1f}", f"{r['backup_mb'] / r['model_mb']:.2f}"] for r in rows])
    return text, rows
