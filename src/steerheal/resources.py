"""Resource guards: enough free disk before a run starts, a warning when a batch will not fit.

Both are estimates made before any work, from the config and the model's shape, so a run
fails in its first second rather than hours later: disk is checked against a generous upper
bound of what the run writes; memory against the largest working set of its stages.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import SteerhealError

MB = 2**20


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def available_memory(device) -> int | None:
    """Bytes the process can still allocate on `device` (None when unknown)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def lora_bytes(d_model: int, n_layers: int, rank: int, band: tuple[float, float]) -> int:
    """fp32 size of one LoRA adapter on the 7 decoder linears (MLP taken as 4x wide)."""
    layers = max(1, round((band[1] - band[0]) * n_layers) + 1)
    per_layer = rank * (4 * 2 * d_model + 3 * (d_model + 4 * d_model))
    return 4 * per_layer * layers


def run_disk_bytes(rounds: int, adapter_bytes: int) -> int:
    """Upper bound of a loop run's artefacts: per round an adapter plus ~16 MB of JSON/vectors."""
    return 32 * MB + rounds * (adapter_bytes + 16 * MB)


def require_disk(path: str | os.PathLike, needed: int, what: str) -> None:
    free = free_bytes(path)
    if free < needed:
        raise SteerhealError(f"not enough free disk for {what}: {free / MB:.0f} MB free at {path}, about "
                             f"{needed / MB:.0f} MB needed", "free some space or choose another --out")


def batch_bytes(d_model: int, n_layers: int, vocab: int, batch: int, seq: int, training: bool,
                elem: int = 2) -> int:
    """Rough peak working set of one batch: with training, the ~25 hidden-sized activations per
    token and block kept for backward (the measured heal step matches within ~10%); without,
    the KV cache plus a few blocks' transients. Plus fp32 logits of one 64-position chunk."""
    per_token_block = 25 if training else 2
    acts = batch * seq * d_model * (n_layers * per_token_block + 16) * elem
    return acts + batch * min(seq, 64) * vocab * 4 * 2


def memory_warning(lm, batch: int, seq: int, *, training: bool, what: str) -> str | None:
    """A warning when `batch` x `seq` tokens will likely not fit next to the model, else None."""
    avail = available_memory(lm.device)
    if avail is None:
        return None
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    elem = lm.dtype.itemsize if hasattr(lm.dtype, "itemsize") else 4
    need = batch_bytes(lm.d_model, lm.n_layers, vocab, batch, seq, training, elem)
    if need <= avail:
        return None
    return (f"warning: {what} batch of {batch} x {seq} tokens needs about {need / MB:.0f} MB, "
            f"{avail / MB:.0f} MB is available; lower its batch_size if the run is killed")
