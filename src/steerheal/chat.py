"""Chat templating and batching: persona in the system role, read position at the tag.

Every prompt we feed a chat model is rendered by its own chat template and ends at the
assistant generation tag; the "read position" of extraction is that prompt's last token.
Batches are left-padded with explicit position ids (cumulative sum of the attention mask):
without them, padded rows see shifted positions and results change with batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SteerhealError

_SENTINEL = "\u2063steerheal-system-probe\u2063"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def supports_system_role(tokenizer) -> bool:
    """True when the template renders a system message verbatim (Gemma's folds or rejects it)."""
    cached = getattr(tokenizer, "_steerheal_system_role", None)
    if cached is not None:
        return cached
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "x"}],
            tokenize=False, add_generation_prompt=True)
        # Some templates (real Gemma 3) fold the system text into the user turn themselves;
        # that still counts as support: the text reaches the model.
        ok = _SENTINEL in text
    except Exception:  # jinja TemplateError, raise_exception(...) in the template
        ok = False
    tokenizer._steerheal_system_role = ok
    return ok


def messages_for(user: str, system: str | None, tokenizer) -> list[dict]:
    """Chat messages with `system` as the system turn, or folded into the user turn."""
    if system is None:
        return [{"role": "user", "content": user}]
    if supports_system_role(tokenizer):
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [{"role": "user", "content": f"{system}\n\n{user}"}]


def render_prompt(tokenizer, user: str, system: str | None = None) -> str:
    """The templated prompt text, ending at the assistant generation tag.

    `system=None` sends no system message, so a template that injects a default system prompt
    (SmolLM2's does) applies it; pass `system=""` to control that explicitly.
    """
    if not has_chat_template(tokenizer):
        raise SteerhealError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template",
            "use an instruct/chat model, or set tokenizer.chat_template before calling",
        )
    return tokenizer.apply_chat_template(messages_for(user, system, tokenizer), tokenize=False,
                                         add_generation_prompt=True)


@dataclass
class Batch:
    """A left-padded batch: every row's last prompt token sits at index -1."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor

    @property
    def prompt_len(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids)))

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids}


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def tokenize_rows(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of already-templated texts; a text over `max_length` is an error.

    The template already carries the special tokens it needs, so none are added.
    """
    rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    for i, ids in enumerate(rows):
        if len(ids) > max_length:
            raise SteerhealError(
                f"prompt {i} is {len(ids)} tokens, over the limit of {max_length} (the context left for it); "
                "it is never truncated, as that would silently change what is read or continued",
                "shorten the prompt/persona, generate fewer tokens, or raise max_length up to the model's context",
            )
    return rows


def pad_left(rows: list[list[int]], pad_id: int, device=None) -> Batch:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    batch = Batch(ids, mask, position_ids_from_mask(mask))
    return batch.to(device) if device is not None else batch


def encode(tokenizer, texts: list[str], max_length: int, device=None) -> Batch:
    return pad_left(tokenize_rows(tokenizer, texts, max_length), tokenizer.pad_token_id, device)


def render_question(tokenizer, question: str) -> str:
    """A prompt after which the next words answer `question`.

    Chat models: the chat template ending at the assistant tag. Base models (no template, e.g.
    the Gemma 3 270M base): `Question: ...\\nAnswer:` after the BOS token, as in plain QA text.
    """
    if has_chat_template(tokenizer):
        return render_prompt(tokenizer, question)
    return f"{tokenizer.bos_token or ''}Question: {question}\nAnswer:"


def non_sink_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens except each row's first one: its residual norm is ~100x the others (the
    attention sink), so nothing proportional to it should be added or averaged."""
    first = attention_mask.long().cumsum(-1) == 1
    return attention_mask.bool() & ~first
