"""tiny-mfv evaluation wall time per protocol on the full classic set (132 vignettes).

The data comes from $STEERHEAL_TINYMFV_DIR, else ../shared/data/tinymfv beside the checkout;
without either, the project's own set is timed instead (and the table says so).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from steerheal.config import EvalConfig
from steerheal.evals import evaluate, load_dataset

from .common import table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinymfv"


def dataset() -> tuple[str, str | None]:
    directory = os.environ.get("STEERHEAL_TINYMFV_DIR") or (str(SHARED) if SHARED.is_dir() else None)
    return ("tinymfv:classic", directory) if directory else ("own", None)


def run(lm, limit: int | None = None, think=(0,)) -> tuple[str, list[dict]]:
    name, directory = dataset()
    items = load_dataset(name, directory, limit)
    rows = []
    for protocol in ("forced-choice", "json-bool"):
        for budget in think:
            t0 = time.perf_counter()
            res = evaluate(lm, items, EvalConfig(protocol=protocol, think=budget))
            rows.append({"protocol": protocol, "think": budget, "vignettes": len(items), "prompts": _n_prompts(res),
                         "seconds": time.perf_counter() - t0, "pmass": res.summary["pmass"]})
    text = table(["protocol", "think", f"vignettes ({name})", "prompts", "seconds (target < 60)", "pmass"],
                 [[r["protocol"], r["think"], r["vignettes"], r["prompts"], f"{r['seconds']:.1f}", f"{r['pmass']:.3f}"]
                  for r in rows])
    return text, rows


def _n_prompts(res) -> int:
    if res.protocol == "forced-choice":
        return len(res.rows) * (2 if res.config["orders"] == "fwd-rev" else 7)
    return len(res.rows) * 2
