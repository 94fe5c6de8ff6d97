"""A small low-rank write at every block output: h <- h + B_l A_l h (rank r, per block or shared).

Applied through forward hooks, so the base model is the same object with the writes off (no
second copy for the reference pass). The first real token of every row is never written to:
its residual norm is ~100x the others (the attention sink), and a write proportional to it
would dominate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..models import LoadedModel


class BlockWrites(nn.Module):
    def __init__(self, d_model: int, layers: list[int], rank: int, shared: bool = False, seed: int = 0):
        super().__init__()
        self.layers, self.shared = list(layers), shared
        n = 1 if shared else len(self.layers)
        gen = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(n, rank, d_model, generator=gen) / d_model**0.5)
        # B starts small but not zero: at B = 0, -KL has a zero gradient (P == Q is its maximum).
        self.B = nn.Parameter(torch.randn(n, d_model, rank, generator=gen) * 1e-3)

    def write(self, i: int, h: torch.Tensor) -> torch.Tensor:
        k = 0 if self.shared else i
        return (h.float() @ self.A[k].T) @ self.B[k].T

    @contextmanager
    def active(self, lm: LoadedModel, first_mask: torch.Tensor | None = None) -> Iterator[None]:
        """Hooks adding each block's write; `first_mask` [batch, prompt width] marks the positions a
        full-width forward may write to (decode steps of generation write to every new token)."""
        def make(i: int):
            def hook(_module, _inputs, output):
                h = output if isinstance(output, torch.Tensor) else output[0]
                w = self.write(i, h)
                if first_mask is not None and h.shape[1] == first_mask.shape[1]:
                    w = w * first_mask.unsqueeze(-1).to(w.dtype)
                out = h + w.to(h.dtype)
                return out if isinstance(output, torch.Tensor) else (out, *output[1:])
            return hook

        handles = [lm.blocks[layer].register_forward_hook(make(i)) for i, layer in enumerate(self.layers)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def save(self, path) -> None:
        from safetensors.torch import save_file

        from ..runs import atomic_path

        meta = {"layers": ",".join(map(str, self.layers)), "shared": str(self.shared)}
        with atomic_path(path) as tmp:
            save_file({"A": self.A.detach().cpu().contiguous(), "B": self.B.detach().cpu().contiguous()}, str(tmp),
                      metadata=meta)

    @classmethod
    def load(cls, path) -> BlockWrites:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta, A, B = f.metadata(), f.get_tensor("A"), f.get_tensor("B")
        writes = cls(A.shape[2], [int(x) for x in meta["layers"].split(",")], A.shape[1], meta["shared"] == "True")
        with torch.no_grad():
            writes.A.copy_(A)
            writes.B.copy_(B)
        return writes
