"""The discovery prompt set: candid scenes that end where the model should continue.

They are fed as raw text, not through a chat template, so an instruct model continues a
conversation, diary or argument instead of answering as an assistant. Base models get their
BOS token first.
"""

from __future__ import annotations

from pathlib import Path

from .. import data
from ..chat import has_chat_template
from ..errors import SteerhealError


def load_prompts(split: str, path: str | Path | None = None) -> list[str]:
    rows = data.read_jsonl(path or Path(data.__file__).parent / "discover_prompts.jsonl")
    texts = [r["text"] for r in rows if isinstance(r, dict) and r.get("split") == split and r.get("text")]
    if not texts:
        raise SteerhealError(f"no {split!r} prompts in {path or 'the shipped discover_prompts.jsonl'}",
                             'give JSONL rows with "split": "train"/"test" and a "text"')
    return texts


def raw_text(tokenizer, text: str) -> str:
    return text if has_chat_template(tokenizer) else f"{tokenizer.bos_token or ''}{text}"
