"""Shipped data (written for this project): persona pairs, extraction contexts, held-out prompts.

- `personas.json`: contrastive persona pairs, each with its narration phrase list, plus a
  generic narration list and refusal phrases.
- `contexts.jsonl`: diverse user messages for extraction (many topics and registers).
- `heldout_prompts.jsonl`: a separate set for calibration and evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import SteerhealError


@dataclass(frozen=True)
class PersonaPair:
    name: str
    axis: str
    pos: str
    neg: str
    narration: tuple[str, ...]
    target_foundation: str | None


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def read_jsonl(path: str | Path) -> list[dict]:
    """Parse a JSONL file; a malformed line is an error naming the file and line."""
    rows = []
    path = Path(path)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SteerhealError(f"{path}:{n} is not valid JSON ({exc.msg})", "fix or remove that line") from exc
    return rows


@cache
def _personas() -> dict:
    return json.loads(_text("personas.json"))


def persona_pairs() -> dict[str, PersonaPair]:
    return {p["name"]: PersonaPair(p["name"], p["axis"], p["pos"], p["neg"], tuple(p["narration"]),
                                   p.get("target_foundation")) for p in _personas()["pairs"]}


def persona_pair(name: str) -> PersonaPair:
    pairs = persona_pairs()
    if name not in pairs:
        raise SteerhealError(f"unknown persona pair {name!r}", f"use one of {sorted(pairs)}")
    return pairs[name]


def generic_narration() -> tuple[str, ...]:
    return tuple(_personas()["generic_narration"])


def refusal_phrases() -> tuple[str, ...]:
    return tuple(_personas()["refusal_phrases"])


@cache
def _prompt_file(name: str) -> tuple[str, ...]:
    return tuple(json.loads(line)["text"] for line in _text(name).splitlines() if line.strip())


def contexts() -> list[str]:
    """User messages for extraction (at least 200, many topics and registers)."""
    return list(_prompt_file("contexts.jsonl"))


def heldout_prompts() -> list[str]:
    """User messages for calibration and evaluation, disjoint from `contexts()`."""
    return list(_prompt_file("heldout_prompts.jsonl"))


def load_prompts(path: str | Path) -> list[str]:
    """User prompts from a file: JSONL with a `text` field, or plain text one prompt per line."""
    path = Path(path)
    if not path.is_file():
        raise SteerhealError(f"prompt file {path} does not exist", "check the path")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        missing = [i for i, r in enumerate(rows, 1) if not isinstance(r, dict) or "text" not in r]
        if missing:
            raise SteerhealError(f"{path}: row {missing[0]} has no 'text' field",
                                 "give each JSON line a 'text' field")
        prompts = [str(r["text"]) for r in rows]
    else:
        prompts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise SteerhealError(f"prompt file {path} is empty", "put at least one prompt in it")
    return prompts
