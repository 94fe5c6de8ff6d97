"""Apply steering vectors: forward hooks that add `coeff * v_l` to block outputs.

- The coefficient is per call; the stored vector is never modified.
- Token scope: `all`, `prompt` (padded index < prompt_len) or `generated` (index >= prompt_len,
  i.e. tokens fed back during generation). Positions are absolute padded indices, tracked
  through the KV cache, so cached generation steers exactly the tokens a full re-forward
  would.
- `cosine_gated`: scale each token's addition by max(0, cos(h, v)).
- Several vectors may be active at once; their additions sum.
- Hooks are removed when the context exits, also on exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import SteerhealError
from ..models import LoadedModel, decoder_stack
from .vector import SteeringVector


@dataclass(frozen=True)
class SteerSpec:
    vector: SteeringVector
    coeff: float
    scope: str = "all"
    cosine_gated: bool = False

    def __post_init__(self) -> None:
        if self.scope not in ("all", "prompt", "generated"):
            raise SteerhealError(f"unknown token scope {self.scope!r}",
                                 "use 'all', 'prompt' or 'generated'")


class _Offset:
    """Absolute index of the first token in the current forward call (KV-cache aware)."""

    def __init__(self) -> None:
        self.value = 0

    def pre_hook(self, _module, args, kwargs):
        past = kwargs.get("past_key_values")
        cache_position = kwargs.get("cache_position")
        if cache_position is not None:
            self.value = int(cache_position.reshape(-1)[0])
        elif past is not None and hasattr(past, "get_seq_length"):
            self.value = int(past.get_seq_length())
        else:
            self.value = 0


def _scope_mask(scope: str, offset: int, length: int, prompt_len: int | None, device) -> torch.Tensor | None:
    if scope == "all":
        return None
    if prompt_len is None:
        raise SteerhealError(f"token scope {scope!r} needs the prompt length",
                             "pass prompt_len= (the padded prompt width) to steering()")
    pos = torch.arange(offset, offset + length, device=device)
    keep = pos < prompt_len if scope == "prompt" else pos >= prompt_len
    return keep.view(1, length, 1)


def _make_hook(terms: list[tuple[torch.Tensor, torch.Tensor | None, str]], offset: _Offset,
               prompt_len: int | None):
    """`terms`: (coeff * v in the model dtype, v in fp32 if cosine-gated else None, scope)."""
    def hook(_module, _inputs, output):
        hidden = output if isinstance(output, torch.Tensor) else output[0]
        delta = None
        for add, gate_v, scope in terms:
            if gate_v is not None:
                cos = torch.nn.functional.cosine_similarity(hidden.float(), gate_v.view(1, 1, -1), dim=-1)
                add = cos.clamp(min=0).unsqueeze(-1).to(hidden.dtype) * add
            mask = _scope_mask(scope, offset.value, hidden.shape[1], prompt_len, hidden.device)
            if mask is not None:
                add = add * mask.to(hidden.dtype)
            delta = add if delta is None else delta + add
        steered = hidden + delta
        if isinstance(output, torch.Tensor):
            return steered
        return (steered, *output[1:])
    return hook


@contextmanager
def steering(lm: LoadedModel, specs: Sequence[SteerSpec], *, prompt_len: int | None = None,
             allow_other_model: bool = False) -> Iterator[None]:
    """Context manager applying every spec in `specs` to `lm`'s forward passes."""
    by_layer: dict[int, list] = {}
    for spec in specs:
        spec.vector.check_compatible(lm, allow_other_model=allow_other_model)
        for layer, v in spec.vector.directions.items():
            v = v.to(lm.block_device(layer))  # under a device map each block may sit on its own GPU
            by_layer.setdefault(layer, []).append(
                ((float(spec.coeff) * v).to(lm.dtype), v if spec.cosine_gated else None, spec.scope))
    offset = _Offset()
    handles = []
    try:
        if any(t[2] != "all" for terms in by_layer.values() for t in terms):
            handles.append(decoder_stack(lm.model).register_forward_pre_hook(
                offset.pre_hook, with_kwargs=True))
        blocks = lm.blocks
        for layer, terms in by_layer.items():
            handles.append(blocks[layer].register_forward_hook(_make_hook(terms, offset, prompt_len)))
        yield
    finally:
        for h in handles:
            h.remove()


def steer(lm: LoadedModel, vector: SteeringVector, coeff: float, *, scope: str = "all",
          cosine_gated: bool = False, prompt_len: int | None = None,
          allow_other_model: bool = False):
    """Shorthand for one vector: `with steer(lm, v, 4.0): ...`."""
    return steering(lm, [SteerSpec(vector, coeff, scope, cosine_gated)], prompt_len=prompt_len,
                    allow_other_model=allow_other_model)
