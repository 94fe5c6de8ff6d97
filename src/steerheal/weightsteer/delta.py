"""A weight-space steering direction dW and the context manager that applies it.

`WeightDelta` maps parameter names of the plain transformers model (for example
`model.layers.12.self_attn.q_proj.weight`) to the change of that parameter. A change whose
numerical rank is small (LoRA, PiSSA, DeLoRA give rank <= 2r) is stored as two factors
`U @ V` (exact up to fp32 rounding), anything else dense; `dense(name)` rebuilds one tensor at
a time, so neither saving nor applying ever materialises every dense change at once.

`applied(lm, alpha)` adds `alpha * scale * dW` in place and, on exit (also on error), copies
back a backup of exactly the tensors it touched, so the weights are restored bit for bit.
It never copies the whole model: the backup holds only the touched tensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import SteerhealError
from ..models import LoadedModel, unwrap
from ..runs import atomic_path, sha256_file

FORMAT = "steerheal.weight_delta.v1"


def factorise(delta: torch.Tensor, max_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(U, V) with U @ V == delta to fp32 rounding when that is smaller than `max_fraction` of dense."""
    if delta.ndim != 2:
        return None
    m, n = delta.shape
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return None
    # Numerical rank with the usual tolerance for the fp32 data the delta came from.
    rank = int((s > s[0] * max(m, n) * torch.finfo(torch.float32).eps).sum())
    if rank * (m + n) > max_fraction * m * n:
        return None
    return (u[:, :rank] * s[:rank]).float().contiguous(), vh[:rank].float().contiguous()


@dataclass
class WeightDelta:
    """dW for one adapter type: dense tensors and/or (U, V) factors, plus where it came from."""

    dense_parts: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    model: str = ""
    revision: str | None = None
    kind: str = ""
    meta: dict = field(default_factory=dict)
    scale: float = 1.0  # a sign or multiple, applied lazily (negation copies nothing)
    digest: str = ""  # sha256 of the file it was loaded from / saved to ("" if never on disk)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], *, compress: bool = True, **info) -> WeightDelta:
        dense, factors = {}, {}
        for name, t in tensors.items():
            pair = factorise(t) if compress else None
            if pair is None:
                dense[name] = t.detach().float().cpu()
            else:
                factors[name] = pair
        return cls(dense, factors, **info)

    @classmethod
    def difference(cls, pos: WeightDelta, neg: WeightDelta, **info) -> WeightDelta:
        """pos - neg, after checking both changed the same parameters of the same base model."""
        if (pos.model, pos.revision) != (neg.model, neg.revision):
            raise SteerhealError(
                f"the two adapters were trained on different bases ({pos.model}@{pos.revision} vs "
                f"{neg.model}@{neg.revision})", "train theta+ and theta- from the same base model")
        if set(pos.names) != set(neg.names):
            only = sorted(set(pos.names) ^ set(neg.names))
            raise SteerhealError(f"the two adapters change different parameters (e.g. {only[0]})",
                                 "train both sides with the same adapter type, targets and layer band")
        tensors = {n: pos.dense(n) - neg.dense(n) for n in pos.names}
        return cls.from_tensors(tensors, model=pos.model, revision=pos.revision, kind=pos.kind, **info)

    # --- views -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted([*self.dense_parts, *self.factors])

    def dense(self, name: str) -> torch.Tensor:
        """The fp32 change of one parameter (times `scale`)."""
        if name in self.dense_parts:
            t = self.dense_parts[name].float()
        else:
            u, v = self.factors[name]
            t = u.float() @ v.float()
        return t * self.scale if self.scale != 1.0 else t

    def scaled(self, factor: float) -> WeightDelta:
        return replace(self, scale=self.scale * factor)

    def __neg__(self) -> WeightDelta:
        return self.scaled(-1.0)

    @property
    def nbytes(self) -> int:
        dense = sum(t.numel() * t.element_size() for t in self.dense_parts.values())
        return dense + sum(u.numel() * u.element_size() + v.numel() * v.element_size()
                           for u, v in self.factors.values())

    def norm(self) -> float:
        return sum(float(self.dense(n).pow(2).sum()) for n in self.names) ** 0.5

    def start_coeff(self) -> float:
        """alpha = 1 is the difference of the two fine-tunes as trained: the natural unit."""
        return 1.0

    # --- application -----------------------------------------------------------------------
    def _parameters(self, lm: LoadedModel | torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        model = unwrap(lm.model if isinstance(lm, LoadedModel) else lm)
        params = dict(model.named_parameters())
        for name in self.names:
            p = params.get(name)
            if p is None:
                raise SteerhealError(f"dW changes {name!r}, which this model does not have",
                                     f"apply it to the model it was trained on ({self.model})")
            shape = tuple(self.dense_parts[name].shape) if name in self.dense_parts else \
                (self.factors[name][0].shape[0], self.factors[name][1].shape[1])
            if tuple(p.shape) != shape:
                raise SteerhealError(f"dW for {name!r} has shape {shape} but the model's is {tuple(p.shape)}",
                                     f"apply it to the model it was trained on ({self.model})")
        return params

    def check_compatible(self, lm: LoadedModel) -> None:
        if self.model and lm.spec != self.model:
            raise SteerhealError(f"dW was trained on {self.model!r}, not {lm.spec!r}",
                                 f"load --model {self.model}")
        if self.revision and lm.revision and self.revision != lm.revision:
            raise SteerhealError(f"dW was trained on revision {self.revision}, this model is {lm.revision}",
                                 "retrain dW on this revision")
        self._parameters(lm)

    @contextmanager
    @torch.no_grad()
    def applied(self, lm: LoadedModel | torch.nn.Module, alpha: float = 1.0,
                prompt_len: int | None = None) -> Iterator[None]:
        """W <- W + alpha * dW in place for the duration of the block; bit-exact restore on exit.

        `prompt_len` is accepted (and ignored) so a WeightDelta can stand wherever the dose
        code applies an intervention: a weight change acts on every position.
        """
        params = self._parameters(lm)
        backup: dict[str, torch.Tensor] = {}
        try:
            for name in self.names:
                p = params[name]
                backup[name] = p.detach().clone()
                change = self.dense(name).to(p.device)
                p.copy_((p.float() + alpha * change).to(p.dtype))
            yield
        finally:
            for name, saved in backup.items():
                params[name].copy_(saved)

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        path = Path(path)
        tensors = {f"dense.{n}": t.to(dtype).contiguous() for n, t in self.dense_parts.items()}
        for n, (u, v) in self.factors.items():
            tensors[f"u.{n}"], tensors[f"v.{n}"] = u.contiguous(), v.contiguous()
        metadata = {"format": FORMAT, "model": self.model, "revision": self.revision or "", "kind": self.kind,
                    "scale": repr(self.scale), "meta": json.dumps(self.meta)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
            self.digest = sha256_file(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> WeightDelta:
        path = Path(path)
        if not path.is_file():
            raise SteerhealError(f"no dW file at {path}", "run `steerheal weight-steer train` first")
        try:
            with safe_open(str(path), framework="pt") as f:
                md = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except Exception as err:  # safetensors raises its own error types
            raise SteerhealError(f"{path} is not a readable safetensors file ({err})",
                                 "re-create it with `steerheal weight-steer train`") from err
        if md.get("format") != FORMAT:
            raise SteerhealError(f"{path} is not a steerheal weight delta", "pass a dW.safetensors file")
        dense = {k[len("dense."):]: t for k, t in tensors.items() if k.startswith("dense.")}
        factors = {k[len("u."):]: (t, tensors["v." + k[len("u."):]]) for k, t in tensors.items() if k.startswith("u.")}
        return cls(dense, factors, model=md.get("model", ""), revision=md.get("revision") or None,
                   kind=md.get("kind", ""), meta=json.loads(md.get("meta", "{}")), scale=float(md.get("scale", 1.0)),
                   digest=sha256_file(path))

