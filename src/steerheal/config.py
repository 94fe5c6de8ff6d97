"""Typed configuration: every default lives here, every range is checked here.

Each stage takes one small frozen dataclass. `from_dict` rejects unknown keys so a typo in a
config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import SteerhealError

Scope = Literal["all", "prompt", "generated"]
ExtractMethod = Literal["mean_diff", "pca"]

T = TypeVar("T")


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise SteerhealError(what, fix)


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build a config dataclass from a dict, rejecting keys the dataclass does not have."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SteerhealError(
            f"unknown key(s) {unknown} in {where}",
            f"use only {sorted(names)}",
        )
    return cls(**data)


@dataclass(frozen=True)
class ExtractConfig:
    """How a contrastive persona vector is read from the model."""

    method: ExtractMethod = "mean_diff"
    layers: str = "mid"  # see steering.layers.parse_layers
    batch_size: int = 16
    max_length: int = 1024  # a longer prompt is an error: truncation would move the read position

    def __post_init__(self) -> None:
        _check(self.method in ("mean_diff", "pca"), f"unknown extraction method {self.method!r}",
               "use 'mean_diff' or 'pca'")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}",
               "set a positive batch size")
        _check(self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}",
               "set a larger max_length")


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling settings for the one batched sampler. None means the model's own default."""

    max_new_tokens: int = 64
    do_sample: bool = True
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    batch_size: int | None = None  # None: pick per device (see generate.default_batch_size)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.max_new_tokens <= 8192,
               f"max_new_tokens must be in [1, 8192], got {self.max_new_tokens}",
               "choose a sensible completion length")
        _check(self.temperature is None or self.temperature > 0,
               f"temperature must be > 0, got {self.temperature}",
               "use do_sample=False for greedy decoding")
        _check(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}",
               "choose top_p in (0, 1]")
        _check(self.batch_size is None or self.batch_size >= 1,
               f"batch_size must be >= 1, got {self.batch_size}", "set a positive batch size")


@dataclass(frozen=True)
class CalibrateConfig:
    """iso-KL calibration (DESIGN.md section 3): p95 of per-token KL(steered || base)."""

    target_kl: float = 1.0
    quantile: float = 0.95
    n_tokens: int = 20  # greedy steered rollout length per prompt
    n_prompts: int = 16
    tol: float = 0.05  # nats, absolute
    max_evals: int = 12
    init_coeff: float | None = None  # None: the vector's calibrated coeff, else a norm heuristic
    max_coeff_factor: float = 2.0**10  # bracketing gives up this far from the start
    batch_size: int = 16
    scope: Scope = "all"

    def __post_init__(self) -> None:
        _check(self.target_kl > 0, f"target_kl must be > 0, got {self.target_kl}",
               "choose a positive KL target in nats, e.g. 1.0")
        _check(0 < self.quantile < 1, f"quantile must be in (0, 1), got {self.quantile}",
               "use e.g. 0.95")
        _check(self.n_tokens >= 1 and self.n_prompts >= 1,
               "n_tokens and n_prompts must be >= 1", "use at least one prompt and one token")
        _check(self.tol > 0, f"tol must be > 0, got {self.tol}", "use e.g. 0.05 nats")
        _check(self.max_evals >= 3, f"max_evals must be >= 3, got {self.max_evals}",
               "allow at least 3 evaluations")
        _check(self.init_coeff is None or self.init_coeff > 0,
               f"init_coeff must be > 0, got {self.init_coeff}",
               "give a positive start; calibrate the negated vector for the other sign")


@dataclass(frozen=True)
class EvalConfig:
    """A tiny-mfv evaluation (DESIGN.md section 8)."""

    protocol: Literal["forced-choice", "json-bool"] = "forced-choice"
    orders: Literal["fwd-rev", "cyclic"] = "fwd-rev"  # forced-choice option orders to average
    think: int = 0  # guided-think tokens before the answer (0: none)
    batch_size: int = 16
    system: str | None = None  # None: no system message (the template's default applies)
    template: str | None = None  # JSON file overriding template fields

    def __post_init__(self) -> None:
        _check(self.protocol in ("forced-choice", "json-bool"), f"unknown protocol {self.protocol!r}",
               "use 'forced-choice' or 'json-bool'")
        _check(self.orders in ("fwd-rev", "cyclic"), f"unknown option orders {self.orders!r}",
               "use 'fwd-rev' or 'cyclic'")
        _check(0 <= self.think <= 4096, f"think must be in [0, 4096], got {self.think}", "use 0 for no thinking")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "set a positive batch size")
