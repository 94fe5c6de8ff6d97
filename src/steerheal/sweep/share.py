"""Stage sharing: runs that differ only in heal settings start from the same round-0 artefacts.

Everything before round 0's heal (the baseline evaluations, extraction, iso-KL dose, sampling,
filtering and the steered evaluation) depends on the model, the pair, the data settings and the
seed, never on `heal.*`, `rounds` or `coherence_floor`. In a sweep over heal settings those
stages are therefore computed once per group (by its first run, the leader) and copied into the
other members' run directories together with their events, so the loop's own resume logic skips
them. The members then train on the very same kept completions: the comparison is matched in
its data, not only in its settings, and costs one pre-heal prefix per group instead of one per run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from ..config import RunConfig
from ..runs import atomic_path, read_events

# Stage events (round None or 0) and the files they stand for; later rounds depend on the heal.
SHARED_STAGES = {
    ("baseline", None): ["base_eval.json", "prompt_eval.json", "base_diary.json"],
    ("extract", 0): ["rounds/r00/vector.safetensors"],
    ("dose", 0): ["rounds/r00/dose.json"],
    ("generate", 0): ["rounds/r00/completions.jsonl"],
    ("filter", 0): ["rounds/r00/filter.json"],
    ("eval_steered", 0): ["rounds/r00/eval_steered.json", "rounds/r00/diary_steered.json"],
}
_HEAL_ONLY = ("heal", "rounds", "coherence_floor")


def prefix_key(cfg: RunConfig) -> str:
    """Runs with equal keys compute identical round-0 pre-heal stages."""
    d = asdict(cfg)
    for key in _HEAL_ONLY:
        d.pop(key)
    return json.dumps(d, sort_keys=True, default=str)


def shareable_events(leader: Path) -> list[dict]:
    """The leader's events for the shared stages, in order; empty if it did not reach them all."""
    found = {}
    for ev in read_events(leader / "events.jsonl"):
        key = (ev.get("stage"), ev.get("round"))
        if key in SHARED_STAGES and key not in found:
            found[key] = ev
    if len(found) < len(SHARED_STAGES):
        return []
    return [found[k] for k in SHARED_STAGES]


def seed_from_leader(leader: Path, member: Path) -> bool:
    """Copy the leader's round-0 pre-heal stages into a member that has not started; True if done.

    Files go first and the events last (one atomic write), so a member killed mid-copy holds no
    event and simply recomputes; a member that already has events is left alone.
    """
    if (member / "events.jsonl").exists():
        return False
    events = shareable_events(leader)
    if not events or not all((leader / f).is_file() for files in SHARED_STAGES.values() for f in files):
        return False
    for files in SHARED_STAGES.values():
        for rel in files:
            with atomic_path(member / rel) as tmp:
                shutil.copyfile(leader / rel, tmp)
    lines = [json.dumps({**ev, "shared_from": leader.name}) for ev in events]
    with atomic_path(member / "events.jsonl") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return True
