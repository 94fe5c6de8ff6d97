"""Plain-text tables of one evaluation's summary (printed by the CLI)."""

from __future__ import annotations

from .vignettes import FOUNDATIONS


def format_summary(result: dict) -> str:
    s = result["summary"]
    head = (f"{result['protocol']} on {result['dataset']}: {s['n']} rows, pmass {s['pmass']:.3f}, "
            f"{result['seconds']:.1f} s")
    if result["protocol"] == "forced-choice":
        lines = [head, f"top-1 accuracy vs human majority: {s['accuracy']:.3f}",
                 f"{'foundation':<13} {'mean p':>8} {'F_nats':>8}"]
        lines += [f"{f:<13} {s['mean_p'][f]:>8.3f} {s['nats'][f]:>8.3f}" for f in FOUNDATIONS]
        return "\n".join(lines)
    conds = s["by_condition"]
    lines = [head, f"frame correlation (wrong vs acceptable, expect < 0): {s['frame_correlation']:.3f}",
             f"{'foundation':<13} {'w other':>8} {'logit o':>8} {'w self':>8} {'logit s':>8} {'gap':>7}"]
    for f in FOUNDATIONS:
        o, se = conds.get("other_violate", {}).get(f), conds.get("self_violate", {}).get(f)
        if not o:
            continue
        cols = [f"{o['wrongness']:>8.3f}", f"{o['logit_w']:>8.3f}"]
        cols += [f"{se['wrongness']:>8.3f}", f"{se['logit_w']:>8.3f}", f"{s['gap_other_minus_self'][f]:>+7.3f}"] \
            if se else ["       -", "       -", "      -"]
        lines.append(f"{f:<13} " + " ".join(cols))
    return "\n".join(lines)
