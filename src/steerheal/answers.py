"""Log-probabilities of short answers after a prompt, batched (the probes' read-out).

An answer is scored as the sum of its tokens' log-probabilities, teacher-forced after the
prompt: log p(answer | prompt). Chat models answer right after the assistant tag, so the
answer's tokens are its own; base models continue `Answer:` and the answer carries a leading
space. Prompt and answer are tokenised separately and concatenated, so every answer's tokens
are the same whatever prompt precedes it (`answer_ids` is what the tokenisation checks use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from .chat import has_chat_template, pad_left, tokenize_rows
from .models import LoadedModel


def answer_ids(lm: LoadedModel, answer: str) -> list[int]:
    text = answer if has_chat_template(lm.tokenizer) else " " + answer.lstrip()
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def answer_logprobs(lm: LoadedModel, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 16,
                    context: Callable[[int, int, torch.Tensor], object] | None = None,
                    grad: bool = False) -> torch.Tensor:
    """log p(answers[i] | prompts[i]) for every i, as an fp32 tensor of shape [n].

    `context(start, stop, attention_mask)`, if given, returns a context manager entered around
    the forward of rows start:stop (per-row injections use it). `grad=True` keeps the graph.
    """
    prompt_rows = tokenize_rows(lm.tokenizer, list(prompts), lm.max_positions)
    ans_rows = [answer_ids(lm, a) for a in answers]
    out = []
    for start in range(0, len(prompt_rows), batch_size):
        stop = min(start + batch_size, len(prompt_rows))
        rows = [prompt_rows[i] + ans_rows[i] for i in range(start, stop)]
        lens = torch.tensor([len(ans_rows[i]) for i in range(start, stop)])
        batch = pad_left(rows, lm.tokenizer.pad_token_id, lm.device)
        width = int(lens.max())
        ctx = context(start, stop, batch.attention_mask) if context else nullcontext()
        with ctx, torch.set_grad_enabled(grad):
            logits = lm.model(**batch.model_inputs(), use_cache=False, logits_to_keep=width + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts the last `width` tokens
        targets = batch.input_ids[:, -width:]
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        keep = torch.arange(width).unsqueeze(0) >= (width - lens).unsqueeze(1)  # each row's own answer
        out.append((picked * keep.to(picked.device)).sum(-1))
    return torch.cat(out) if out else torch.zeros(0)
