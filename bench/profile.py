"""Where the slowest loop stage spends its time: cProfile of one dose stage.

Dose (iso-KL calibration, then walk-C probes that generate and filter) is the most
expensive stage of a `demo` round (`docs/demo/README.md`). It is profiled twice on the same
vector and prompts: on the base model (round 1) and with two LoRA rounds stacked as in round
3 (PEFT's unmerged path: every adapted linear runs its base matmul plus one low-rank pair per
adapter). Reported: wall time of each and the top entries by internal time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

from steerheal import data
from steerheal.config import CalibrateConfig, FilterConfig, GenerateConfig
from steerheal.dose import calibrate, walk_c
from steerheal.filters import filter_completions
from steerheal.generate import generate
from steerheal.heal.adapters import AdapterHistory, LoraSpec
from steerheal.steering import SteerSpec, extract

from .common import table


def _dose(lm, vec, prompts, history, target_kl, new_tokens) -> None:
    half = len(prompts) // 2
    cal = calibrate(lm, vec, prompts[half:], CalibrateConfig(target_kl=target_kl, tol=0.05 * target_kl,
                                                             n_prompts=half))
    original = (lambda: history.reference("base")) if history and history.names else None

    def probe(coeff, offset, count):
        window = [prompts[(offset + i) % len(prompts)] for i in range(count)]
        recs = generate(lm, window, steer=[SteerSpec(vec, coeff)], config=GenerateConfig(max_new_tokens=new_tokens))
        return filter_completions(lm, recs, FilterConfig(), original=original)

    walk_c(probe, cal.coeff, half, per_probe=max(half // 2, 1), max_probes=4)


def _profiled(fn) -> tuple[float, str]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    seconds = time.perf_counter() - t0
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    return seconds, out.getvalue()


def _top_rows(report: str, n: int = 10) -> list[list[str]]:
    rows = []
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    for line in lines[start + 1:]:
        parts = line.split(None, 5)
        if len(parts) == 6:
            rows.append([parts[0], parts[1], parts[3], parts[5][-70:]])
        if len(rows) == n:
            break
    return rows


def run(lm, n_adapters: int = 2, target_kl: float = 1.0, n_prompts: int = 32,
        new_tokens: int = 64) -> tuple[str, dict]:
    pair = data.persona_pair("care-over-authority")
    vec = extract(lm, pair.pos, pair.neg, data.contexts()[:32])
    prompts = data.heldout_prompts()[:n_prompts]
    t_base, report_base = _profiled(lambda: _dose(lm, vec, prompts, None, target_kl, new_tokens))
    history = AdapterHistory(lm)
    for _ in range(n_adapters):
        history.new_round(LoraSpec())
    t_stack, report_stack = _profiled(lambda: _dose(lm, vec, prompts, history, target_kl, new_tokens))
    lm.model = history.peft_model.unload()
    head = [["dose on the base model", f"{t_base:.1f}", "1.00"],
            [f"dose with {n_adapters} stacked LoRA adapters", f"{t_stack:.1f}", f"{t_stack / t_base:.2f}"]]
    text = table(["stage", "seconds", "vs base"], head)
    for title, report in (("base model", report_base), (f"{n_adapters} stacked adapters", report_stack)):
        text += f"\n\nTop entries by internal time, {title} (cProfile):\n\n" + table(
            ["calls", "tottime s", "cumtime s", "function"], _top_rows(report))
    return text, {"base_s": t_base, "stacked_s": t_stack}
