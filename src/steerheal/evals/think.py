"""Optional guided thinking before the answer slot.

Reasoning models whose tokenizer has a single `<think>` token get `<think>` ... `</think>`;
other models get a plain-text scratchpad (no tags: SmolLM2 would split `<think>` into
pieces and has no `</think>` at all). A budget of 0 means no think phase.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import GenerateConfig
from ..generate import generate_from_texts
from ..steering.hooks import SteerSpec


def think_markers(tokenizer) -> tuple[str, str]:
    ids = tokenizer("<think>", add_special_tokens=False)["input_ids"]
    if len(ids) == 1 and "</think>" in tokenizer.get_vocab():
        return "<think>\n", "\n</think>\n\n"
    return "Let me think it through briefly. ", "\n"


def with_thoughts(lm, texts: Sequence[str], budget: int, prefill: str, *, steer: Sequence[SteerSpec] = (),
                  batch_size: int = 16) -> tuple[list[str], list[str]]:
    """Append a greedy think phase of `budget` tokens, then the answer prefill, to each prompt."""
    if budget <= 0:
        return [t + prefill for t in texts], ["" for _ in texts]
    open_, close = think_markers(lm.tokenizer)
    cfg = GenerateConfig(max_new_tokens=budget, do_sample=False, batch_size=batch_size)
    thoughts = [c.completion for c in generate_from_texts(lm, [t + open_ for t in texts], steer=steer, config=cfg)]
    return [t + open_ + th.strip() + close + prefill for t, th in zip(texts, thoughts, strict=True)], thoughts
