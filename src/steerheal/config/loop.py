"""The steer-heal loop's configs: one per stage, and RunConfig that nests them (DESIGN.md 3-7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .parse import ExtractMethod, Scope, _check, from_dict


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
class RunConfig:
    """The steer-heal loop (DESIGN.md section 7). Presets live in steerheal/data/presets/."""

    model: str = "smollm2-135m"
    device: str | None = None  # None: best available; "auto": a device map over every GPU (models.load_model)
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
        return from_dict(cls, data, where=where)
