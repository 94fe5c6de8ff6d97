"""Collect a sweep's runs into one comparison: results.json / .csv / .md and sweep.png.

Loop sweeps, per run: the final round's target-axis delta of the healed student against the base model
(paired bootstrap 95% CI, the loop's own `healed_vs_base`), coherence (healed pmass and its
ratio to the base model's), rounds completed, whether it stopped early, wall time and status.
Runs that differ only in `seed` form a group; the group table gives the mean and standard
deviation of the delta over seeds, so settings are compared across seeds, not on one draw.

Weight-steering sweeps, per run and sign: alpha (calibrated, or fixed by `compare.alpha`), the
p95 token KL it costs, the axis delta of the steered model against the base model with its CI
and pmass / base; plus the prompting and activation-vector rows of the same comparisons.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from ..runs import atomic_path, write_json, write_text
from .jobs import check_same_config, job_for
from .runner import SweepState
from .spec import Sweep


def run_rows(job, run, state: SweepState) -> list[dict]:
    """The run's result rows (one for a loop run, one per sign for a weight-steering run)."""
    attempts = state.attempts.get(run.name, [])
    base = {"run": run.name, **{k: run.overrides.get(k) for k in job.sweep.varied},
            "status": attempts[-1]["status"] if attempts else "not run", "attempts": len(attempts),
            "wall_s": round(state.wall_s(run.name), 1)}
    if attempts and attempts[-1]["status"] == "failed":
        base["error"] = attempts[-1]["error"]
    rows = job.rows(run, base)
    for row in rows:
        if row["status"] == "not run" and row.get("delta") is not None:
            row["status"] = "done"  # finished before this state file (e.g. a copied directory)
    return rows


def group_keys(results: dict) -> list[str]:
    """The columns that define a setting: what varies, except the seed, plus the sign (weight steering)."""
    keys = [k for k in results["varied"] if k != results["seed_key"]]
    return keys + ["sign"] if results["job"] == "weight-steer" else keys


def group_rows(results: dict) -> list[dict]:
    keys = group_keys(results)
    groups: dict[tuple, list[dict]] = {}
    for row in results["runs"]:
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
    job = job_for(sweep, out)
    results = {"sweep": sweep.name, "job": sweep.job, "varied": sweep.varied, "seed_key": job.seed_key,
               "runs": [row for r in sweep.runs for row in run_rows(job, r, state)]}
    results["groups"] = group_rows(results)
    if sweep.job == "weight-steer":
        results["references"] = _unique([ref for r in sweep.runs for ref in job.references(r)])
    write_json(out / "results.json", results)
    write_text(out / "results.csv", _csv(results["runs"]))
    write_text(out / "results.md", markdown(results))
    plot(results, out / "sweep.png")
    return results


def _unique(rows: list[dict]) -> list[dict]:
    """Reference rows once each: runs that share them report the very same cached row."""
    seen, out = set(), []
    for row in rows:
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-run table (shared by the CLI and results.md)."""
    varied = results["varied"]
    axis = next((r["axis"] for r in results["runs"] if r.get("axis")), "axis")
    ws = results["job"] == "weight-steer"
    what = f"d{axis} dW-base [95% CI]" if ws else f"d{axis} healed-base [95% CI]"
    head = ["run", *varied, *(["sign", "alpha", "KL p95"] if ws else []), what, "pmass/base",
            *([] if ws else ["rounds", "kept"]), "wall s", "status"]
    rows = []
    for r in results["runs"]:
        status = r["status"] + (f" x{r['attempts']}" if r.get("attempts", 0) > 1 else "")
        if ws:
            middle = [r.get("sign", "-"), _fmt(r.get("alpha"), 4), _fmt(r.get("kl_p95"))]
        else:
            rounds = f"{r.get('rounds_done', 0)}/{r['rounds_planned']}" + (" (stopped)" if r.get("stopped_early")
                                                                           else "")
            middle = [rounds, f"{r['kept']}/{r['total']}" if r.get("kept") is not None else "-"]
        cells = [_ci(r), _fmt(r.get("pmass_ratio"))]
        rows.append([r["run"], *(_fmt(r.get(k)) for k in varied),
                     *(middle + cells if ws else cells + middle), f"{r['wall_s']:.0f}", status])
    return head, rows


def _ci(r: dict) -> str:
    if r.get("delta") is None:
        return "-"
    return f"{_fmt(r.get('delta'))} [{_fmt(r.get('delta_lo'))}, {_fmt(r.get('delta_hi'))}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(results: dict) -> str:
    lines = _table(*table_rows(results))
    groups = results["groups"]
    if any(g["n"] > 1 for g in groups):
        keys = group_keys(results)
        lines += ["", *_table([*keys, "seeds", "mean delta", "sd", "mean pmass/base"],
                              [[*(_fmt(g.get(k)) for k in keys), str(g["n"]), _fmt(g["delta_mean"]),
                                _fmt(g["delta_sd"]), _fmt(g["pmass_ratio_mean"])] for g in groups])]
    refs = results.get("references")
    if refs:
        lines += ["", "References on the same vignettes (prompting; the activation vector calibrated at "
                  "its run's target_kl):", "",
                  *_table(["method", "training", "target KL", "coeff", "KL p95", "delta [95% CI]", "pmass/base"],
                          [[r["label"], r["training"], _fmt(r["target_kl"]), _fmt(r.get("alpha"), 4),
                            _fmt(r.get("kl_p95")), _ci(r), _fmt(r.get("pmass_ratio"))] for r in refs])]
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


def _finite(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _plot_weights(plt, results) if results["job"] == "weight-steer" else _plot_loop(plt, results)
    fig.suptitle(f"sweep {results['sweep']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _errbar(r: dict) -> list[list[float]]:
    # A percentile CI need not contain the point estimate exactly: clip the bar lengths at 0.
    return [[max(0.0, r["delta"] - r["delta_lo"])], [max(0.0, r["delta_hi"] - r["delta"])]]


def _plot_loop(plt, results: dict):
    """Left: each run's axis delta with its CI, grouped by setting; right: coherence (pmass / base)."""
    rows = [r for r in results["runs"] if _finite(r.get("delta"), r.get("delta_lo"), r.get("delta_hi"))]
    keys = group_keys(results)
    label = lambda r: ", ".join(f"{k.split('.')[-1]}={r.get(k)}" for k in keys if r.get(k) is not None) or r["run"]
    labels = list(dict.fromkeys(label(r) for r in rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.5 * max(4, len(labels)) + 1.5), sharey=True)
    for i, name in enumerate(labels):
        members = [r for r in rows if label(r) == name]
        offsets = [(j - (len(members) - 1) / 2) * 0.12 for j in range(len(members))]
        for off, r in zip(offsets, members, strict=True):
            a.errorbar(r["delta"], i + off, xerr=_errbar(r), fmt="o", color="tab:blue", capsize=3)
            if r.get("pmass_ratio") is not None:
                b.plot(r["pmass_ratio"], i + off, "o", color="tab:green")
    axis = rows[0]["axis"] if rows else "axis"
    a.axvline(0, color="black", lw=0.8)
    a.set_yticks(range(len(labels)), labels)
    a.set_xlabel(f"{axis}: healed - base (final round, 95% CI); one point per seed")
    b.axvline(1, color="black", lw=0.8, ls="--")
    b.set_xlabel("coherence: healed pmass / base pmass")
    return fig


def _plot_weights(plt, results: dict):
    """Axis delta (left) and coherence (right) against the KL each dW costs: one line per adapter
    setting and sign through its alphas; the activation vector as stars, prompting as dotted lines."""
    rows = [r for r in results["runs"] if _finite(r.get("delta"), r.get("delta_lo"), r.get("delta_hi"),
                                                  r.get("kl_p95"))]
    dose = {"compare.alpha", "compare.target_kl", results["seed_key"]}
    keys = [k for k in group_keys(results) if k not in dose]
    label = lambda r: ", ".join(f"{k.split('.')[-1]}={r.get(k)}" for k in keys if r.get(k) is not None)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    for i, name in enumerate(dict.fromkeys(label(r) for r in rows)):
        line = sorted((r for r in rows if label(r) == name), key=lambda r: r["kl_p95"])
        kl = [r["kl_p95"] for r in line]
        color = f"C{i % 10}"
        a.errorbar(kl, [r["delta"] for r in line], yerr=[[e[0][0] for e in map(_errbar, line)],
                                                       [e[1][0] for e in map(_errbar, line)]],
                   fmt="o-", color=color, capsize=3, label=name or "dW")
        b.plot(kl, [r["pmass_ratio"] for r in line], "o-", color=color)
    for ref in results.get("references", []):
        if not _finite(ref.get("delta")):
            continue
        if ref["label"].startswith("vector") and _finite(ref.get("kl_p95")):
            a.plot(ref["kl_p95"], ref["delta"], "*", color="black", ms=11)
            a.annotate(ref["label"], (ref["kl_p95"], ref["delta"]), fontsize=8, xytext=(4, 4),
                       textcoords="offset points")
            if ref.get("pmass_ratio") is not None:
                b.plot(ref["kl_p95"], ref["pmass_ratio"], "*", color="black", ms=11)
        elif ref["label"].startswith("prompt"):
            a.axhline(ref["delta"], color="grey", ls=":", lw=1)
            a.annotate(ref["label"], (0, ref["delta"]), xycoords=("axes fraction", "data"), fontsize=8,
                       color="grey", xytext=(2, 2), textcoords="offset points")
    axis = rows[0]["axis"] if rows else "axis"
    a.axhline(0, color="black", lw=0.8)
    a.set_xlabel("p95 token KL to base (nats)")
    a.set_ylabel(f"{axis}: steered - base (95% CI)")
    if rows:
        a.legend(fontsize=8)
    b.axhline(1, color="black", lw=0.8, ls="--")
    b.set_xlabel("p95 token KL to base (nats)")
    b.set_ylabel("coherence: pmass / base pmass")
    return fig
