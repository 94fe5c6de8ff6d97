"""Typed configuration: every default lives here, every range is checked here.

Each stage takes one small frozen dataclass. `from_dict` rejects unknown keys so a typo in a
config file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import SteerhealError

Scope = Literal["all", "prompt", "generated"]
ExtractMethod = Literal["mean_diff", "pca"]

T = TypeVar("T")


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise SteerhealError(what, fix)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` checked against the field's type (JSON/TOML give lists for tuples, ints for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = SteerhealError(f"{name} must be {_describe(hint)}, got {value!r}", f"give {name} a value of that type")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except SteerhealError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise SteerhealError(f"{name} must be one of {list(args)}, got {value!r}", f"choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], name) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, name) for v, a in zip(value, args, strict=True))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint in (bool, str) and not isinstance(value, hint):
        raise bad
    return value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return {type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build a config dataclass from a dict, rejecting unknown keys and values of the wrong type."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SteerhealError(
            f"unknown key(s) {unknown} in {where}",
            f"use only {sorted(names)}",
        )
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not dataclasses.is_dataclass(hints[key]):  # nested sections are built by their parent
            data[key] = _coerce(value, hints[key], f"{where}.{key}")
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


@dataclass(frozen=True)
class HealConfig:
    """One heal round (DESIGN.md section 5): LoRA on kept completions, NLL + divergence barrier."""

    reg: Literal["nll", "kl_rev", "kl_fwd"] = "kl_rev"
    agg: Literal["mean", "rmse", "p95", "max"] = "rmse"
    tau: float = 0.5  # nats: the barrier is zero while D <= tau
    lam: float = 1.0
    lam_round_pow: float = 0.0  # lam_r = lam * (1 + rounds_baked) ** lam_round_pow
    barrier_ref: Literal["base", "prev"] = "base"
    spectral_lam: float = 0.0
    lr: float = 2e-4
    weight_decay: float = 0.0
    epochs: int = 2
    batch_size: int = 4
    max_len: int = 256  # prompt + completion tokens; longer completions are cut from the end
    val_frac: float = 0.1
    grad_clip: float = 1.0
    kl_chunk: int = 64  # positions per fp32 NLL/KL chunk (peak memory ~ 5 x chunk x vocab x 4 bytes)
    # Each term's gradient norm needs a second backward pass (measured 2.8x step time, see
    # docs/benchmarks.md), so it is logged every N steps; the total norm is logged every step.
    grad_norm_every: int = 10
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_band: tuple[float, float] = (0.2, 0.8)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.reg in ("nll", "kl_rev", "kl_fwd"), f"unknown reg {self.reg!r}", "use nll, kl_rev or kl_fwd")
        _check(self.agg in ("mean", "rmse", "p95", "max"), f"unknown agg {self.agg!r}", "use mean, rmse, p95 or max")
        _check(self.barrier_ref in ("base", "prev"), f"unknown barrier_ref {self.barrier_ref!r}", "use base or prev")
        _check(self.tau >= 0 and self.lam >= 0 and self.spectral_lam >= 0, "tau, lam and spectral_lam must be >= 0",
               "use non-negative barrier settings")
        _check(0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr}", "use e.g. 1e-4")
        _check(self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1", "use positive values")
        _check(0 <= self.val_frac < 1, f"val_frac must be in [0, 1), got {self.val_frac}", "use e.g. 0.1")
        _check(self.max_len >= 16, f"max_len must be >= 16, got {self.max_len}", "use e.g. 256")
        _check(self.lora_rank >= 1, f"lora_rank must be >= 1, got {self.lora_rank}", "use e.g. 8")
        _check(self.kl_chunk >= 1 and self.grad_norm_every >= 0, "kl_chunk must be >= 1 and grad_norm_every >= 0",
               "use e.g. kl_chunk 64, grad_norm_every 1")
        _check(0 <= self.lora_band[0] <= self.lora_band[1] <= 1, f"bad lora_band {self.lora_band}",
               "give two fractions of depth, low <= high")


@dataclass(frozen=True)
class FilterConfig:
    """Gates on completion scores (DESIGN.md section 4). None disables a gate."""

    # Defaults from 32 unsteered sampled SmolLM2-135M completions (64 tokens): tail perplexity
    # 1.7-6.0 and repetition 0.032-0.096; steered loops and word salad sit above both gates.
    max_tail_ppl: float | None = 12.0  # perplexity of the last 25% of tokens under the original model
    tail_frac: float = 0.25
    max_repetition: float | None = 0.12  # most common word/char 2-4-gram share
    max_narration: int | None = 0  # narration phrase hits allowed
    refusal: Literal["drop", "keep", "require"] = "drop"  # "require" selects for it (e.g. a love persona?)
    min_tokens: int = 4  # shorter completions are dropped as empty
    max_judge: float | None = None  # gate on a judge plugin's score, if one is given

    def __post_init__(self) -> None:
        _check(0 < self.tail_frac <= 1, f"tail_frac must be in (0, 1], got {self.tail_frac}", "use e.g. 0.25")
        _check(self.refusal in ("drop", "keep", "require"), f"unknown refusal mode {self.refusal!r}",
               "use drop, keep or require")


@dataclass(frozen=True)
class DoseConfig:
    """walk-C: bisect the dose around the iso-KL coefficient for a filter pass rate."""

    target_pass: float = 0.75
    per_probe: int = 8
    max_probes: int = 4

    def __post_init__(self) -> None:
        _check(0 < self.target_pass <= 1, f"target_pass must be in (0, 1], got {self.target_pass}", "use e.g. 0.75")
        _check(self.per_probe >= 1 and self.max_probes >= 1, "per_probe and max_probes must be >= 1",
               "use positive values")


@dataclass(frozen=True)
class WeightSteerConfig:
    """Weight steering (DESIGN.md section 9): two adapters trained on persona-conditioned samples."""

    kinds: tuple[str, ...] = ("lora", "dora", "pissa", "ia3", "oft", "delora")
    n_prompts: int = 64  # shipped contexts sampled under each persona
    n_per_prompt: int = 1
    max_new_tokens: int = 64
    temperature: float | None = None  # None: the model's own default
    filter: bool = True  # drop incoherent/narrating samples with the loop's scorers
    rank: int = 8
    lora_alpha: float = 16.0
    layer_band: tuple[float, float] = (0.25, 0.75)
    oft_block_size: int = 32
    lr: float = 5e-4
    lr_scale: tuple[tuple[str, float], ...] = (("ia3", 10.0),)  # IA3 scales need a larger step
    epochs: int = 2
    batch_size: int = 8
    max_len: int = 256
    store_dtype: Literal["float32", "bfloat16"] = "float32"  # dense parts of dW on disk
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.n_prompts >= 1 and self.n_per_prompt >= 1, "n_prompts and n_per_prompt must be >= 1",
               "use positive counts")
        _check(self.rank >= 1 and self.epochs >= 1 and self.batch_size >= 1,
               "rank, epochs and batch_size must be >= 1", "use positive values")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}", "use e.g. 5e-4")
        _check(0 <= self.layer_band[0] <= self.layer_band[1] <= 1,
               f"layer_band must satisfy 0 <= lo <= hi <= 1, got {self.layer_band}", "use e.g. [0.25, 0.75]")
        _check(self.store_dtype in ("float32", "bfloat16"), f"unknown store_dtype {self.store_dtype!r}",
               "use 'float32' or 'bfloat16'")

    def lr_for(self, kind: str) -> float:
        return self.lr * dict(self.lr_scale).get(kind, 1.0)


@dataclass(frozen=True)
class ResistConfig:
    """Steering-resistance probe (DESIGN.md section 9): per fact, steer towards its false answer."""

    layers: str = "mid"  # where each fact vector is read and added
    n_extract: int = 2  # paraphrases that build the vector; the rest measure the answer
    target_kl: float = 1.0  # the iso-KL unit: coefficient multipliers are relative to this KL
    multipliers: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    n_control: int = 16  # other facts' questions used as the capability check
    break_frac: float = 0.75  # capability breaks below this fraction of the unsteered accuracy
    kl_prompts: int = 4  # held-out prompts for the KL of each point (greedy steered rollouts)
    kl_tokens: int = 8
    batch_size: int = 16
    limit: int | None = None  # first N facts only

    def __post_init__(self) -> None:
        _check(self.n_extract >= 1, f"n_extract must be >= 1, got {self.n_extract}", "use e.g. 2")
        _check(self.target_kl > 0, f"target_kl must be > 0, got {self.target_kl}", "use e.g. 1.0 nats")
        _check(len(self.multipliers) >= 2 and all(m != 0 for m in self.multipliers),
               f"multipliers must be >= 2 non-zero values, got {self.multipliers}",
               "list signed multiples of the iso-KL coefficient, e.g. [-1, 0.5, 1, 2]")
        _check(self.n_control >= 1 and self.kl_prompts >= 1 and self.kl_tokens >= 1 and self.batch_size >= 1,
               "n_control, kl_prompts, kl_tokens and batch_size must be >= 1", "use positive values")
        _check(0 < self.break_frac < 1, f"break_frac must be in (0, 1), got {self.break_frac}", "use e.g. 0.75")
        _check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}",
               "omit it for every fact")


@dataclass(frozen=True)
class IntrospectConfig:
    """Gradient-awareness experiment (DESIGN.md section 9): can the model name what it is corrected on?"""

    mode: Literal["raw", "virtual", "projector"] = "raw"
    layer: int | None = None  # None: the middle block
    raw_scale: float = 1.0  # raw mode: injected norm as a multiple of the residual norm at the layer
    target_kl: float = 1.0  # virtual mode: eta set so the median-norm gradient costs this p95 KL
    projector: Literal["linear", "mlp"] = "linear"
    projector_steps: int = 150
    projector_lr: float = 1e-3
    folds: int = 2  # projector: topics split into folds; each fold is scored by a map trained on the others
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.mode in ("raw", "virtual", "projector"), f"unknown mode {self.mode!r}",
               "use raw, virtual or projector")
        _check(self.projector in ("linear", "mlp"), f"unknown projector {self.projector!r}", "use linear or mlp")
        _check(self.raw_scale > 0 and self.target_kl > 0, "raw_scale and target_kl must be > 0",
               "use e.g. 1.0")
        _check(self.projector_steps >= 1 and self.projector_lr > 0 and self.batch_size >= 1,
               "projector_steps and batch_size must be >= 1 and projector_lr > 0", "use positive values")
        _check(self.folds >= 2, f"folds must be >= 2, got {self.folds}", "use e.g. 2")


@dataclass(frozen=True)
class DiscoverConfig:
    """Unsupervised discovery of steerable directions (DESIGN.md section 9, seed 001)."""

    method: Literal["divergence", "melbo"] = "divergence"
    n: int = 4  # independent searches (divergence) or orthogonal vectors (melbo)
    seed: int = 0
    # divergence: a rank-`rank` write at every block output (shared weights if `shared`)
    rank: int = 2
    shared: bool = False
    alpha: float = 1.1  # weight of -KL(P_base || Q)
    beta: float = 0.3  # weight of NLL(Q, y ~ Q)
    lr: float = 1e-2
    steps: int = 24  # optimiser steps per search (each samples a fresh on-policy batch)
    batch_size: int = 8
    sample_tokens: int = 32
    prompt_frac: float = 0.75  # each search trains on its own random subset of the train prompts
    # melbo: fixed-norm bias at `source`, maximising the change of block `target`'s output
    source: int | None = None  # None: a quarter of the way up
    target: int | None = None  # None: three quarters of the way up
    radius: float = 1.0  # the bias norm, as a multiple of the residual norm at the source block
    melbo_steps: int = 40
    melbo_lr: float = 0.05
    power: float = 2.0

    def __post_init__(self) -> None:
        _check(self.method in ("divergence", "melbo"), f"unknown method {self.method!r}", "use divergence or melbo")
        _check(self.n >= 1 and self.rank >= 1 and self.steps >= 1 and self.melbo_steps >= 1 and self.batch_size >= 1,
               "n, rank, steps, melbo_steps and batch_size must be >= 1", "use positive values")
        _check(self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta > 0,
               f"alpha and beta must be >= 0, not both 0 (got {self.alpha}, {self.beta})", "use e.g. 1.1 and 0.3")
        _check(self.lr > 0 and self.melbo_lr > 0 and self.radius > 0 and self.power >= 1,
               "lr, melbo_lr and radius must be > 0 and power >= 1", "use the defaults")
        _check(0 < self.prompt_frac <= 1 and self.sample_tokens >= 2,
               "prompt_frac must be in (0, 1] and sample_tokens >= 2", "use e.g. 0.75 and 32")


@dataclass(frozen=True)
class ScoreConfig:
    """Linearity and dose-response scoring of discovered directions."""

    n_eval: int = 32  # held-out prompts
    groups: int = 4  # prompt groups, one deviation description per group (rows of the cosine matrix)
    new_tokens: int = 48
    coeffs: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # dose-response, x the direction's scale
    target_kl: float = 1.0  # the iso-KL unit marked on each dose-response
    samples: int = 3  # completions shown per coefficient in the HTML page
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.n_eval >= 2 and 2 <= self.groups <= self.n_eval,
               f"need n_eval >= 2 and 2 <= groups <= n_eval (got {self.n_eval}, {self.groups})", "use e.g. 32 and 4")
        _check(self.new_tokens >= 1 and self.samples >= 1 and self.target_kl > 0,
               "new_tokens and samples must be >= 1 and target_kl > 0", "use the defaults")
        _check(0.0 in self.coeffs and len(self.coeffs) >= 3, f"coeffs must include 0 and two more, got {self.coeffs}",
               "use e.g. [-1, 0, 1]")


@dataclass(frozen=True)
class RunConfig:
    """The steer-heal loop (DESIGN.md section 7). Presets live in steerheal/data/presets/."""

    model: str = "smollm2-135m"
    device: str | None = None
    dtype: str | None = None
    pair: str = "care-over-authority"
    axis: str | None = None  # foundation to track; None: the pair's target_foundation
    rounds: int = 3
    seed: int = 0
    layers: str = "mid"
    n_contexts: int = 96  # extraction contexts (the first N shipped contexts)
    n_prompts: int = 24  # generation prompts per round (further contexts, a new window each round)
    n_per_prompt: int = 2
    max_new_tokens: int = 64
    temperature: float | None = None
    eval_protocol: str = "forced-choice"
    eval_dataset: str = "own"
    eval_data_dir: str | None = None
    eval_limit: int | None = None
    coherence_floor: float = 0.95  # stop when healed pmass < floor * base pmass
    diary_prompt: str | None = None  # None: the shipped held-out diary question
    calibrate: CalibrateConfig = CalibrateConfig()
    dose: DoseConfig = DoseConfig()
    filters: FilterConfig = FilterConfig()
    heal: HealConfig = HealConfig()

    def __post_init__(self) -> None:
        _check(1 <= self.rounds <= 100, f"rounds must be in [1, 100], got {self.rounds}", "use e.g. 3")
        _check(self.n_contexts >= 1 and self.n_prompts >= 1 and self.n_per_prompt >= 1,
               "n_contexts, n_prompts and n_per_prompt must be >= 1", "use positive counts")
        _check(0 <= self.coherence_floor <= 1, f"coherence_floor must be in [0, 1], got {self.coherence_floor}",
               "use e.g. 0.95")

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> RunConfig:
        data = dict(data)
        nested = {"calibrate": CalibrateConfig, "dose": DoseConfig, "filters": FilterConfig, "heal": HealConfig}
        for key, sub in nested.items():
            if key in data and not isinstance(data[key], sub):
                if not isinstance(data[key], dict):
                    raise SteerhealError(f"{where}.{key} must be a table of settings, got {data[key]!r}",
                                         f"write {key} as an object of {sub.__name__} fields")
                data[key] = from_dict(sub, data[key], where=f"{where}.{key}")
        return from_dict(cls, data, where=where)
