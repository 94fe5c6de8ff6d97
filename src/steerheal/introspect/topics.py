"""The topic set: correction items (a question, its right and a wrong answer) per topic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import data
from ..answers import answer_ids
from ..errors import SteerhealError
from ..models import LoadedModel


@dataclass(frozen=True)
class Item:
    topic: int  # index into TopicSet.topics
    prompt: str
    right: str
    wrong: str


@dataclass(frozen=True)
class Topic:
    name: str
    label: str  # the word the model should answer with
    contexts: tuple[str, ...]  # prompts in this domain (for the decoupling test)


@dataclass(frozen=True)
class TopicSet:
    question: str  # asked after the target prompt: which subject are you corrected on?
    detect_question: str  # yes/no: do you feel pushed to correct something?
    neutral_prompts: tuple[str, ...]
    no_questions: tuple[str, ...]  # yes/no questions whose right answer is "no" (the yes-bias probe)
    topics: tuple[Topic, ...]
    items: tuple[Item, ...]


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise SteerhealError(f"{where}: {what}", "see src/steerheal/data/introspect_topics.json for the format")


def load_topics(path: str | Path | None = None) -> TopicSet:
    where = str(path or "the shipped introspect_topics.json")
    if path and not Path(path).is_file():
        raise SteerhealError(f"topic file {path} does not exist", "check the path")
    try:
        raw = json.loads(Path(path or Path(data.__file__).parent / "introspect_topics.json").read_text())
    except json.JSONDecodeError as err:
        raise SteerhealError(f"{where} is not valid JSON ({err.msg})", "fix the file") from err
    _need(isinstance(raw, dict) and isinstance(raw.get("topics"), list) and len(raw["topics"]) >= 2, where,
          "needs a 'topics' list with at least 2 topics")
    for key in ("question", "detect_question"):
        _need(isinstance(raw.get(key), str) and raw[key].strip(), where, f"needs a '{key}' string")
    for key in ("neutral_prompts", "no_questions"):
        _need(isinstance(raw.get(key), list) and raw[key], where, f"needs a non-empty '{key}' list")
    topics, items = [], []
    for t, top in enumerate(raw["topics"]):
        _need(isinstance(top, dict) and top.get("label") and top.get("items") and top.get("contexts"), where,
              f"topic {t + 1} needs a label, items and contexts")
        topics.append(Topic(top.get("name", top["label"]), top["label"], tuple(top["contexts"])))
        for it in top["items"]:
            _need(all(isinstance(it.get(k), str) and it[k].strip() for k in ("prompt", "right", "wrong")), where,
                  f"an item of topic {top['label']!r} needs prompt, right and wrong")
            items.append(Item(t, it["prompt"], it["right"], it["wrong"]))
    return TopicSet(raw["question"], raw["detect_question"], tuple(raw["neutral_prompts"]),
                    tuple(raw["no_questions"]), tuple(topics), tuple(items))


def check_topics(lm: LoadedModel, ts: TopicSet) -> None:
    """Every item needs a correction loss: right and wrong must tokenise, and differently."""
    for it in ts.items:
        r, w = answer_ids(lm, it.right), answer_ids(lm, it.wrong)
        if not r or not w or r == w:
            raise SteerhealError(
                f"topic {ts.topics[it.topic].label!r}: item {it.prompt!r} has no valid target tokenisation "
                f"({it.right!r} -> {r}, {it.wrong!r} -> {w})", "give right and wrong answers with different tokens")
    labels = [tuple(answer_ids(lm, label_text(lm, t.label))) for t in ts.topics]
    if len(set(labels)) != len(labels) or not all(labels):
        raise SteerhealError("two topic labels tokenise identically (or one is empty)", "use distinct topic labels")


def label_text(lm: LoadedModel, label: str) -> str:
    """Chat models start their reply capitalised; base models continue lower case."""
    from ..chat import has_chat_template

    return label[:1].upper() + label[1:] if has_chat_template(lm.tokenizer) else label
