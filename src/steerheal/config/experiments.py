"""Configs of the related systems (DESIGN.md section 9): weight steering, the resistance probe,
gradient awareness and unsupervised discovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .loop import CalibrateConfig, EvalConfig
from .parse import _check


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
class CompareSettings:
    """One matched-KL comparison table: base, prompting, the activation vector and each dW."""

    dataset: str = "own"
    protocol: Literal["json-bool", "forced-choice"] = "json-bool"
    target_kl: float = 1.0  # iso-KL target (p95 token KL, nats) for the vector and, unless `alpha`, each dW
    rel_tol: float = 0.05  # a calibration is reached within rel_tol * target_kl
    # A fixed dW scale instead of a calibrated one (W + sign * alpha * dW): a dose-response point,
    # its KL measured rather than matched. The vector rows stay calibrated at target_kl.
    alpha: float | None = None
    signs: tuple[int, ...] = (1, -1)
    vector: bool = True
    prompt: bool = True
    n_contexts: int = 64  # activation-vector extraction contexts
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    n_resamples: int = 2000

    def __post_init__(self) -> None:
        _check(bool(self.dataset.strip()), "dataset must not be empty", "use own, tinymfv:<set> or hub:<config>")
        _check(self.protocol in ("json-bool", "forced-choice"), f"unknown protocol {self.protocol!r}",
               "use 'json-bool' or 'forced-choice'")
        _check(self.target_kl > 0 and 0 < self.rel_tol < 1, f"target_kl must be > 0 and rel_tol in (0, 1), got "
               f"{self.target_kl} and {self.rel_tol}", "use e.g. 1.0 and 0.05")
        _check(self.alpha is None or self.alpha > 0, f"alpha must be > 0, got {self.alpha}",
               "give a positive scale (the signs setting negates it), or leave it unset to calibrate")
        _check(len(self.signs) >= 1 and set(self.signs) <= {1, -1} and len(set(self.signs)) == len(self.signs),
               f"signs must be [1], [-1] or [1, -1], got {list(self.signs)}", "use [1, -1] for both directions")
        _check(self.n_contexts >= 1 and self.n_resamples >= 100, "n_contexts must be >= 1 and n_resamples >= 100",
               "use e.g. 64 and 2000")


@dataclass(frozen=True)
class WeightSteerRun:
    """One weight-steering job: train theta+/theta- for one adapter type, then compare at matched KL.

    A sweep over adapter type x alpha is a grid over `kind` and `compare.alpha`; runs with equal
    training settings share one training directory (every adapter type of theirs trained once).
    """

    model: str = "smollm2-135m"
    pair: str = "care-over-authority"
    kind: str = "lora"  # one adapter type per run (kinds.py lists them)
    device: str | None = None
    dtype: str | None = None
    data_dir: str | None = None  # tiny-mfv folder (or STEERHEAL_TINYMFV_DIR)
    limit: int | None = None  # evaluate only the first N vignettes
    claims: str | None = None  # JSONL of false claims for the Yes/No probe (None: the shipped set)
    train: WeightSteerConfig = field(default_factory=WeightSteerConfig)
    compare: CompareSettings = field(default_factory=CompareSettings)

    def __post_init__(self) -> None:
        from ..weightsteer.kinds import parse_kinds

        _check(parse_kinds(self.kind) == [self.kind], f"kind must be one adapter type, got {self.kind!r}",
               "write e.g. kind = 'lora' (a grid over kind for several)")  # unknown/unavailable fail in parse_kinds
        _check(self.train.kinds == WeightSteerConfig().kinds, "train.kinds is not used by a weight-steering run",
               "set the adapter type with `kind` (a grid over it for several)")
        _check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}", "omit it for all")


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
    lr: float = 3e-3
    steps: int = 24  # at most this many optimiser steps per search (each samples a fresh on-policy batch)
    # Stop a search once its batch's mean per-token KL(P_base || Q) reaches this many nats: the
    # objective is unbounded, and on SmolLM2-135M an unbudgeted search (lr 1e-2, 24 steps) ran to
    # 90-300 nats and one repeated token (docs/probes/README.md). None: always run every step.
    kl_stop: float | None = 1.0  # the iso-KL scale the loop doses steering at
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
        _check(self.kl_stop is None or self.kl_stop > 0, f"kl_stop must be > 0, got {self.kl_stop}",
               "give a KL budget in nats, e.g. 2.0, or leave it unset")
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
