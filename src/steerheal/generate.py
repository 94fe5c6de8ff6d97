"""The one batched sampler: plain, steered or adapted generation, seedable.

Prompts are user messages rendered with the model's chat template (with an optional system
persona), left-padded with explicit position ids, and sampled with `model.generate` under
any steering specs. Each batch is seeded with `seed + batch_index`, so a run with the same
prompts, batch size and seed repeats exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from . import faults
from .chat import encode, render_prompt
from .config import GenerateConfig
from .errors import SteerhealError
from .models import LoadedModel, unwrap
from .progress import progress
from .steering.hooks import SteerSpec, steering


@dataclass
class Completion:
    prompt: str  # the user message (or the rendered text for pre-rendered prompts)
    completion: str
    token_ids: list[int]
    prompt_text: str = ""  # the exact rendered prompt the completion continues
    system: str | None = None
    coeff: float = 0.0
    seed: int = 0
    sample: int = 0  # index of this sample among the n drawn for the prompt
    finished: bool = True  # ended on an end-of-turn token rather than the length limit
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def default_batch_size(lm: LoadedModel) -> int:
    """Largest batch that comfortably fits: modest on CPU (compute bound), larger on GPUs."""
    if lm.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(lm.device)
        return 64 if free > 20 * 2**30 else 32
    return 16


def stop_token_ids(lm: LoadedModel) -> list[int]:
    ids = set()
    gen_cfg = getattr(unwrap(lm.model), "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    for value in (eos if isinstance(eos, list) else [eos]):
        if value is not None:
            ids.add(int(value))
    if lm.tokenizer.eos_token_id is not None:
        ids.add(int(lm.tokenizer.eos_token_id))
    return sorted(ids)


def sampling_kwargs(lm: LoadedModel, cfg: GenerateConfig) -> dict:
    """The model's own sampling defaults where the config leaves a field as None."""
    if not cfg.do_sample:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    gen_cfg = getattr(unwrap(lm.model), "generation_config", None)

    def pick(name, fallback):
        ours = getattr(cfg, name)
        if ours is not None:
            return ours
        theirs = getattr(gen_cfg, name, None)
        return theirs if theirs is not None else fallback

    kwargs = {"do_sample": True, "temperature": pick("temperature", 0.7), "top_p": pick("top_p", 0.9),
              "top_k": pick("top_k", 0)}
    if cfg.repetition_penalty is not None:
        kwargs["repetition_penalty"] = cfg.repetition_penalty
    return kwargs


def generate(lm: LoadedModel, prompts: Sequence[str], *, system: str | None = None,
             steer: Sequence[SteerSpec] = (), n: int = 1, config: GenerateConfig | None = None,
             max_length: int | None = None, desc: str | None = None,
             allow_other_model: bool = False) -> list[Completion]:
    """Sample `n` completions per user prompt; returns records in prompt-major order."""
    if not prompts:
        raise SteerhealError("no prompts to generate from", "pass at least one prompt")
    if n < 1:
        raise SteerhealError(f"n must be >= 1, got {n}", "ask for at least one sample per prompt")
    jobs = [(p, k) for p in prompts for k in range(n)]
    texts = [render_prompt(lm.tokenizer, p, system) for p, _ in jobs]
    records = generate_from_texts(lm, texts, steer=steer, config=config, max_length=max_length, desc=desc,
                                  allow_other_model=allow_other_model)
    for rec, (prompt, k) in zip(records, jobs, strict=True):
        rec.prompt, rec.system, rec.sample = prompt, system, k
    return records


@torch.no_grad()
def generate_from_texts(lm: LoadedModel, texts: Sequence[str], *, steer: Sequence[SteerSpec] = (),
                        config: GenerateConfig | None = None, max_length: int | None = None,
                        desc: str | None = None, allow_other_model: bool = False) -> list[Completion]:
    """Continue already-rendered prompt texts (one completion each), in batches."""
    cfg = config or GenerateConfig()
    batch_size = cfg.batch_size or default_batch_size(lm)
    limit = max_length or lm.max_positions - cfg.max_new_tokens
    stops = stop_token_ids(lm)
    coeff = float(sum(s.coeff for s in steer)) if steer else 0.0
    out: list[Completion] = []
    starts = range(0, len(texts), batch_size)
    for b, start in enumerate(progress(starts, desc=desc, total=len(starts))):
        batch = encode(lm.tokenizer, list(texts[start:start + batch_size]), limit, lm.device)
        seed = cfg.seed + b
        torch.manual_seed(seed)
        with steering(lm, steer, prompt_len=batch.prompt_len, allow_other_model=allow_other_model):
            seqs = lm.model.generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                max_new_tokens=cfg.max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id,
                eos_token_id=stops, **sampling_kwargs(lm, cfg))
        new = seqs[:, batch.prompt_len:].cpu()
        ends, found = first_stop(new, stops)
        for row, end, finished, text in zip(new.tolist(), ends.tolist(), found.tolist(),
                                            texts[start:start + batch_size], strict=True):
            ids = row[:end]
            out.append(Completion(prompt=text, prompt_text=text, token_ids=ids, coeff=coeff, seed=seed,
                                  finished=finished, completion=lm.tokenizer.decode(ids, skip_special_tokens=True)))
        faults.reached("generate")
    return out


def first_stop(new_tokens: torch.Tensor, stops: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: index of the first stop token (or the width) and whether one was found.

    Everything from the first stop token on is dropped: after it `generate` only pads.
    """
    is_stop = torch.isin(new_tokens, torch.tensor(list(stops), dtype=new_tokens.dtype))
    found = is_stop.any(dim=1)
    width = torch.full_like(found, new_tokens.shape[1], dtype=torch.long)
    first = torch.where(found, is_stop.int().argmax(dim=1), width)
    return first, found
