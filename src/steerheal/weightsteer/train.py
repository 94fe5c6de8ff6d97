"""Train theta+ and theta- for each adapter type and turn them into dW.

Data: the target model answers the shipped contexts under the `pos` and under the `neg`
persona system prompt (same prompts, same sampling seed). The system prompt is then
stripped: each training example is the bare user prompt followed by the persona-conditioned
completion tokens, so the adapter must carry the persona itself.

Each side is trained on a freshly loaded base model with the same seed (same adapter
initialisation and batch order), by NLL on completion tokens. Its change is read per
adapted layer by merging in fp32 and subtracting the original weights: the difference of
two fp32 merges keeps the small change that a bf16 merge would round away. PiSSA rewrites
the base weights at initialisation; reading against the weights of the fresh load keeps its
change exact, and the re-initialisation is identical on both sides, so it cancels in dW.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..chat import render_prompt
from ..config import FilterConfig, GenerateConfig, WeightSteerConfig
from ..data import PersonaPair, generic_narration, refusal_phrases
from ..errors import SteerhealError
from ..filters import filter_completions
from ..generate import Completion, generate, stop_token_ids
from ..heal.data import Example, collate, make_example
from ..heal.losses import aggregate
from ..heal.train import completion_logits, per_token_terms
from ..models import LoadedModel
from ..progress import progress
from .delta import WeightDelta
from .kinds import AdapterShape, peft_config


@dataclass
class SideResult:
    kind: str
    side: str  # "pos" or "neg"
    n_train: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_trainable: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def persona_samples(lm: LoadedModel, pair: PersonaPair, prompts: Sequence[str], cfg: WeightSteerConfig,
                    *, desc: str | None = None) -> dict[str, list[Completion]]:
    """Sample the model under each persona's system prompt with the same seed."""
    gen = GenerateConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    return {side: generate(lm, list(prompts), system=persona, n=cfg.n_per_prompt, config=gen,
                           desc=desc and f"{desc} ({side})")
            for side, persona in (("pos", pair.pos), ("neg", pair.neg))}


def keep_coherent(lm: LoadedModel, records: list[Completion], pair: PersonaPair) -> set[int]:
    """Indices of the records that pass the loop's filters (defaults; trait narration dropped as
    in heal). Every record keeps its scores in `extra["filter"]`."""
    report = filter_completions(lm, records, FilterConfig(), narration=pair.narration + generic_narration(),
                                refusals=refusal_phrases())
    for rec, score in zip(records, report.scores, strict=True):
        rec.extra["filter"] = score
    return set(report.kept)


def training_examples(lm: LoadedModel, records: Sequence[Completion], max_len: int) -> list[Example]:
    """Bare user prompt + the persona-conditioned completion tokens (system prompt stripped)."""
    eos = stop_token_ids(lm)[0]
    return [make_example(lm.tokenizer, render_prompt(lm.tokenizer, r.prompt, None), r.completion,
                         completion_ids=r.token_ids, finished=r.finished, max_len=max_len, eos_id=eos)
            for r in records]


def _target_weights(model: torch.nn.Module, targets: Sequence[str]) -> dict[str, torch.Tensor]:
    """A copy of the weights an adapter may touch (decoder linears named in `targets`)."""
    return {f"{name}.weight": m.weight.detach().clone() for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets}


@torch.no_grad()
def merged_changes(peft_model, originals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per adapted layer: fp32 merge minus the original weight, for the parameters that changed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    changes = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        key = name.removeprefix("base_model.model.") + ".weight"
        if key not in originals:
            raise SteerhealError(f"adapter layer {name} has no original weight to compare with",
                                 "target only decoder linear layers")
        module.to(torch.float32)
        module.merge(safe_merge=True)
        change = module.get_base_layer().weight.detach() - originals[key].float()
        if bool(torch.any(change != 0)):
            changes[key] = change.cpu()
    return changes


def _nll_step(model, batch, opt, params) -> float:
    logits, targets, seq = completion_logits(model, batch)
    nll_t, _ = per_token_terms(logits, None, targets, "kl_rev", 64)
    loss = aggregate(nll_t, seq, batch.input_ids.shape[0], "mean").mean()
    if not torch.isfinite(loss):
        raise SteerhealError(f"non-finite training loss ({float(loss):.3g})", "lower --lr")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def fit_adapter(lm: LoadedModel, kind: str, side: str, records: Sequence[Completion], cfg: WeightSteerConfig,
                *, desc: str | None = None):
    """Wrap `lm.model` in a fresh adapter of `kind`, fine-tune it by NLL on `records`; returns
    the PEFT model and the training record. The adapter init and batch order depend on the seed only."""
    from peft import get_peft_model

    if not records:
        raise SteerhealError(f"no {side} samples left to train the {kind} adapter on",
                             "sample more prompts (--n-prompts) or turn the filter off (--no-filter)")
    shape = AdapterShape(rank=cfg.rank, alpha=cfg.lora_alpha, layer_band=cfg.layer_band,
                         oft_block_size=cfg.oft_block_size)
    examples = training_examples(lm, records, cfg.max_len)
    torch.manual_seed(cfg.seed)
    try:
        model = get_peft_model(lm.model, peft_config(kind, shape, lm.n_layers))
    except (ValueError, TypeError) as err:
        raise SteerhealError(f"PEFT cannot build a {kind} adapter for {lm.spec}: {err}",
                             "choose other adapter types (--adapter) or adjust rank/oft_block_size") from err
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr_for(kind), weight_decay=0.0)
    result = SideResult(kind, side, len(examples), n_trainable=sum(p.numel() for p in params))
    rng = random.Random(cfg.seed)
    n_batches = math.ceil(len(examples) / cfg.batch_size)
    pad = lm.tokenizer.pad_token_id
    t0 = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for b in progress(range(n_batches), desc=desc and f"{desc} epoch {epoch + 1}", total=n_batches):
            chunk = [examples[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            result.losses.append(_nll_step(model, collate(chunk, pad).to(lm.device), opt, params))
    model.eval()
    result.seconds = time.perf_counter() - t0
    return model, result


def train_side(load: Callable[[], LoadedModel], kind: str, side: str, records: Sequence[Completion],
               cfg: WeightSteerConfig, *, desc: str | None = None) -> tuple[dict[str, torch.Tensor], SideResult]:
    """Fine-tune one adapter of `kind` on a fresh base; return its merged weight change."""
    lm = load()
    originals = _target_weights(lm.model, AdapterShape().target_modules)
    model, result = fit_adapter(lm, kind, side, records, cfg, desc=desc)
    return merged_changes(model, originals), result


def train_delta(load: Callable[[], LoadedModel], kind: str, samples: dict[str, list[Completion]],
                cfg: WeightSteerConfig, *, info: dict | None = None,
                desc: str | None = None) -> tuple[WeightDelta, list[SideResult]]:
    """dW = (merged(theta+) - base) - (merged(theta-) - base) for one adapter type."""
    changes, results = {}, []
    for side in ("pos", "neg"):
        changes[side], res = train_side(load, kind, side, samples[side], cfg, desc=desc and f"{desc} {side}")
        results.append(res)
    lm_info = dict(info or {})
    model, revision = lm_info.pop("model", ""), lm_info.pop("revision", None)
    pos, neg = (WeightDelta(changes[side], model=model, revision=revision, kind=kind) for side in ("pos", "neg"))
    delta = WeightDelta.difference(pos, neg, meta=lm_info | {"sides": [r.to_dict() for r in results]})
    return delta, results
