"""Collect a sweep's runs into one comparison: results.json / .csv / .md and sweep.png.

Per run: the final round's target-axis delta of the healed student against the base model
(paired bootstrap 95% CI, the loop's own `healed_vs_base`), coherence (healed pmass and its
ratio to the base model's), rounds completed, whether it stopped early, wall time and status.
Runs that differ only in `seed` form a group; the group table gives the mean and standard
deviation of the delta over seeds, so settings are compared across seeds, not on one draw.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from ..runs import atomic_path, write_json, write_text
from .runner import SweepState, check_same_config
from .spec import Sweep


def run_row(sweep: Sweep, run, run_dir: Path, state: SweepState) -> dict:
    attempts = state.attempts.get(run.name, [])
    row = {"run": run.name, **{k: run.overrides.get(k) for k in sweep.varied},
           "status": attempts[-1]["status"] if attempts else "not run", "attempts": len(attempts),
           "wall_s": round(state.wall_s(run.name), 1), "rounds_planned": run.config.rounds}
    if attempts and attempts[-1]["status"] == "failed":
        row["error"] = attempts[-1]["error"]
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return {**row, "rounds_done": 0}
    summary = json.loads(summary_path.read_text())
    if row["status"] == "not run":
        row["status"] = "done"  # finished before this state file (e.g. a copied directory)
    base_pmass = summary["base"]["pmass"]
    last = summary["rounds"][-1] if summary["rounds"] else None
    row.update(axis=summary["axis"], rounds_done=len(summary["rounds"]), stopped_early=bool(summary["stopped_early"]),
               base_pmass=base_pmass)
    if last:
        delta = last["healed_vs_base"]["axis"] or {}
        row.update(delta=delta.get("delta"), delta_lo=delta.get("lo"), delta_hi=delta.get("hi"),
                   steered=last["steered"]["axis"]["value"], healed_pmass=last["healed"]["pmass"],
                   pmass_ratio=last["healed"]["pmass"] / base_pmass if base_pmass else None,
                   kept=last["kept"], total=last["total"])
    return row


def group_rows(sweep: Sweep, rows: list[dict]) -> list[dict]:
    keys = [k for k in sweep.varied if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(json.dumps(row.get(k)) for k in keys), []).append(row)
    out = []
    for members in groups.values():
        deltas = [r["delta"] for r in members if r.get("delta") is not None]
        ratios = [r["pmass_ratio"] for r in members if r.get("pmass_ratio") is not None]
        out.append({**{k: members[0].get(k) for k in keys}, "n": len(deltas),
                    "delta_mean": statistics.fmean(deltas) if deltas else None,
                    "delta_sd": statistics.stdev(deltas) if len(deltas) > 1 else None,
                    "pmass_ratio_mean": statistics.fmean(ratios) if ratios else None})
    return out


def collect(sweep: Sweep, out: Path, state: SweepState | None = None) -> dict:
    """Write results.json, results.csv, results.md and sweep.png under `out`; return the results."""
    out = Path(out)
    for run in sweep.runs:  # never tabulate a directory under settings it was not run with
        check_same_config(run, out / "runs" / run.name)
    state = state or SweepState.load(out / "state.json")
    rows = [run_row(sweep, r, out / "runs" / r.name, state) for r in sweep.runs]
    results = {"sweep": sweep.name, "varied": sweep.varied, "runs": rows, "groups": group_rows(sweep, rows)}
    write_json(out / "results.json", results)
    write_text(out / "results.csv", _csv(rows))
    write_text(out / "results.md", markdown(results))
    plot(results, out / "sweep.png")
    return results


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-run table (shared by the CLI and results.md)."""
    varied = results["varied"]
    axis = next((r["axis"] for r in results["runs"] if r.get("axis")), "axis")
    head = ["run", *varied, f"d{axis} healed-base [95% CI]", "pmass/base", "rounds", "kept", "wall s", "status"]
    rows = []
    for r in results["runs"]:
        ci = f"{_fmt(r.get('delta'))} [{_fmt(r.get('delta_lo'))}, {_fmt(r.get('delta_hi'))}]" \
            if r.get("delta") is not None else "-"
        rounds = f"{r.get('rounds_done', 0)}/{r['rounds_planned']}" + (" (stopped)" if r.get("stopped_early") else "")
        kept = f"{r['kept']}/{r['total']}" if r.get("kept") is not None else "-"
        status = r["status"] + (f" x{r['attempts']}" if r.get("attempts", 0) > 1 else "")
        rows.append([r["run"], *(_fmt(r.get(k)) for k in varied), ci, _fmt(r.get("pmass_ratio")), rounds, kept,
                     f"{r['wall_s']:.0f}", status])
    return head, rows


def markdown(results: dict) -> str:
    head, rows = table_rows(results)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    groups = results["groups"]
    if any(g["n"] > 1 for g in groups):
        keys = [k for k in results["varied"] if k != "seed"]
        lines += ["", "| " + " | ".join([*keys, "seeds", "mean delta", "sd", "mean pmass/base"]) + " |",
                  "|" + "---|" * (len(keys) + 4)]
        lines += ["| " + " | ".join([*(_fmt(g.get(k)) for k in keys), str(g["n"]), _fmt(g["delta_mean"]),
                                      _fmt(g["delta_sd"]), _fmt(g["pmass_ratio_mean"])]) + " |" for g in groups]
    failed = [r for r in results["runs"] if r["status"] == "failed"]
    lines += [f"\nfailed: {r['run']}: {r.get('error', '')}" for r in failed]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot(results: dict, path: Path) -> None:
    """Left: each run's axis delta with its CI, grouped by setting; right: coherence (pmass / base)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = lambda *xs: all(x is not None and math.isfinite(x) for x in xs)
    rows = [r for r in results["runs"] if finite(r.get("delta"), r.get("delta_lo"), r.get("delta_hi"))]
    keys = [k for k in results["varied"] if k != "seed"]
    label = lambda r: ", ".join(f"{k.split('.')[-1]}={r.get(k)}" for k in keys if r.get(k) is not None) or r["run"]
    labels = list(dict.fromkeys(label(r) for r in rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.5 * max(4, len(labels)) + 1.5), sharey=True)
    for i, name in enumerate(labels):
        members = [r for r in rows if label(r) == name]
        offsets = [(j - (len(members) - 1) / 2) * 0.12 for j in range(len(members))]
        for off, r in zip(offsets, members, strict=True):
            # A percentile CI need not contain the point estimate exactly: clip the bar lengths at 0.
            err = [[max(0.0, r["delta"] - r["delta_lo"])], [max(0.0, r["delta_hi"] - r["delta"])]]
            a.errorbar(r["delta"], i + off, xerr=err, fmt="o", color="tab:blue", capsize=3)
            if r.get("pmass_ratio") is not None:
                b.plot(r["pmass_ratio"], i + off, "o", color="tab:green")
    axis = rows[0]["axis"] if rows else "axis"
    a.axvline(0, color="black", lw=0.8)
    a.set_yticks(range(len(labels)), labels)
    a.set_xlabel(f"{axis}: healed - base (final round, 95% CI); one point per seed")
    b.axvline(1, color="black", lw=0.8, ls="--")
    b.set_xlabel("coherence: healed pmass / base pmass")
    fig.suptitle(f"sweep {results['sweep']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
