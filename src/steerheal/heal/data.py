"""Training examples for heal: exact prompt/completion token alignment.

A completion record from the sampler carries its own token ids, so the example is simply
prompt ids + completion ids (+ the end-of-turn token when the completion finished). Text-only
records are tokenised as the concatenation and the prompt boundary is checked: the prompt's
own tokens must be an exact prefix, otherwise the example is rejected with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SteerhealError


@dataclass
class Example:
    input_ids: list[int]
    n_prompt: int  # tokens before the first completion token
    truncated: bool = False


def make_example(tokenizer, prompt_text: str, completion: str, completion_ids: list[int] | None = None,
                 finished: bool = True, max_len: int = 256, eos_id: int | None = None) -> Example:
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if completion_ids is None:
        full = tokenizer(prompt_text + completion, add_special_tokens=False)["input_ids"]
        if full[: len(prompt_ids)] != prompt_ids:
            raise SteerhealError("prompt/completion boundary moved when tokenising their concatenation",
                                 "store completion token ids, or end prompts on a special token")
        completion_ids = full[len(prompt_ids):]
    ids = list(completion_ids) + ([eos_id] if finished and eos_id is not None else [])
    if len(prompt_ids) + 1 >= max_len:
        raise SteerhealError(f"prompt of {len(prompt_ids)} tokens leaves no room under max_len {max_len}",
                             "raise max_len or shorten the prompt")
    room = max_len - len(prompt_ids)
    truncated = len(ids) > room
    return Example(prompt_ids + ids[:room], len(prompt_ids), truncated)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] right-padded
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    target_mask: torch.Tensor  # [B, T] True where position t predicts a completion token at t + 1

    def to(self, device) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                              self.target_mask)))


def collate(examples: list[Example], pad_id: int) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        target[i, e.n_prompt - 1: n - 1] = True  # positions whose next token is a completion token
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, mask, pos, target)
