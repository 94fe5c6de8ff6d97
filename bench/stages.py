"""Per-stage wall time of a finished run, from its events.jsonl: `python -m bench.stages RUN_DIR`.

A stage's time is the gap between its event and the previous event (each event is logged
when its stage's artefacts are written), so the table is exact for a run that was not
interrupted.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from .common import table

STAGES = ["extract", "dose", "generate", "filter", "eval_steered", "heal", "eval_healed"]


def stage_times(run_dir: str | Path) -> tuple[float, dict[int, dict[str, float]]]:
    events = [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]
    per_round: dict[int, dict[str, float]] = defaultdict(dict)
    baseline = 0.0
    for prev, ev in zip(events, events[1:], strict=False):
        gap = ev["time"] - prev["time"]
        if ev["round"] is not None and ev["stage"] in STAGES:
            per_round[ev["round"]][ev["stage"]] = gap
    return baseline, dict(per_round)


def main(argv: list[str] | None = None) -> str:
    run_dir = (argv or sys.argv[1:])[0]
    _, rounds = stage_times(run_dir)
    rows = [[f"r{r}", *[f"{t.get(s, float('nan')):.1f}" for s in STAGES], f"{sum(t.values()):.1f}"]
            for r, t in sorted(rounds.items())]
    text = table(["round", *STAGES, "total s"], rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
