"""PEFT adapter types for weight steering, and the config each one is trained with.

Every kind targets the same decoder linear layers in the same band of depth, so the kinds
differ only in how they parametrise the weight change. A kind the installed PEFT lacks is
reported with its reason rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import SteerhealError
from ..steering.layers import default_layers

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterShape:
    """What every kind shares: rank-like capacity, target modules and depth band."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ATTENTION + MLP
    layer_band: tuple[float, float] = (0.25, 0.75)
    oft_block_size: int = 32


def _lora(shape: AdapterShape, layers: list[int], **extra):
    from peft import LoraConfig

    return LoraConfig(r=shape.rank, lora_alpha=shape.alpha, target_modules=list(shape.target_modules),
                      layers_to_transform=layers, bias="none", task_type="CAUSAL_LM", **extra)


def _ia3(shape: AdapterShape, layers: list[int]):
    from peft import IA3Config

    # IA3 learns a scale per channel; it has no rank. Scaling the input of the MLP's output
    # projection and the key/value outputs is the layout of the IA3 paper.
    # IA3Config has no layers_to_transform, so the depth band goes into a module-name regex.
    targets = [m for m in ("k_proj", "v_proj", "down_proj") if m in shape.target_modules] or list(shape.target_modules)
    ff = [m for m in targets if m in MLP]
    band = "|".join(str(i) for i in layers)

    def pattern(names: list[str]) -> str:
        return rf".*\.layers\.({band})\.[^.]+\.({'|'.join(names)})$"

    return IA3Config(target_modules=pattern(targets), feedforward_modules=pattern(ff) if ff else None,
                     task_type="CAUSAL_LM")


def _oft(shape: AdapterShape, layers: list[int]):
    from peft import OFTConfig

    return OFTConfig(r=0, oft_block_size=shape.oft_block_size, target_modules=list(shape.target_modules),
                     layers_to_transform=layers, task_type="CAUSAL_LM")


def _delora(shape: AdapterShape, layers: list[int]):
    from peft import DeloraConfig

    return DeloraConfig(r=shape.rank, target_modules=list(shape.target_modules), layers_to_transform=layers,
                        task_type="CAUSAL_LM")


BUILDERS: dict[str, tuple[str, Callable]] = {
    "lora": ("LoraConfig", lambda s, ls: _lora(s, ls)),
    "dora": ("LoraConfig", lambda s, ls: _lora(s, ls, use_dora=True)),
    "pissa": ("LoraConfig", lambda s, ls: _lora(s, ls, init_lora_weights="pissa")),
    "ia3": ("IA3Config", _ia3),
    "oft": ("OFTConfig", _oft),
    "delora": ("DeloraConfig", _delora),
}
KINDS = tuple(BUILDERS)


def unavailable_reason(kind: str) -> str | None:
    """None when the installed PEFT can train `kind`, else why not."""
    import peft

    if kind not in BUILDERS:
        return f"unknown adapter type {kind!r}"
    cls_name = BUILDERS[kind][0]
    if not hasattr(peft, cls_name):
        return f"PEFT {peft.__version__} has no {cls_name}"
    return None


def skipped_kinds() -> dict[str, str]:
    """Known kinds the installed PEFT cannot train, with the reason."""
    return {k: r for k in KINDS if (r := unavailable_reason(k))}


def parse_kinds(spec: str | Sequence[str]) -> list[str]:
    """'lora,dora' or 'all' -> a checked list. 'all' is every kind the installed PEFT offers
    (see `skipped_kinds` for the rest); a named unknown or unavailable kind is an error."""
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if items == ["all"]:
        return [k for k in KINDS if k not in skipped_kinds()]
    if not items:
        raise SteerhealError("no adapter type given", f"pass e.g. --adapter lora,dora (known: {', '.join(KINDS)})")
    for kind in items:
        reason = unavailable_reason(kind)
        if reason:
            raise SteerhealError(reason, f"use one of {', '.join(KINDS)} (or upgrade PEFT)")
    return list(dict.fromkeys(items))


def peft_config(kind: str, shape: AdapterShape, n_layers: int):
    reason = unavailable_reason(kind)
    if reason:
        raise SteerhealError(reason, f"use one of {', '.join(KINDS)}")
    return BUILDERS[kind][1](shape, default_layers(n_layers, shape.layer_band))
