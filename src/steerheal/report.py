"""The run report: trajectory.png and a self-contained report.html, rebuilt from the run files.

Panels: (A) the target axis over rounds for base, prompt-only baseline, steered and healed,
with bootstrap 95% CIs; (B) incoherence 1 - pmass on a log axis; (C) the target axis against
the largest off-target mover (healed minus base). The HTML page embeds the PNG, a per-round
table and the diary: the same held-out question answered by the base model, the steered
student and each healed round (greedy, no steering when healed).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .runs import atomic_path, write_text


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    xs = [r["round"] + 1 for r in rounds]
    axis = summary["axis"]
    unit = "nats" if summary["protocol"] == "forced-choice" else "logit(w)"
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))

    def band(ax, key, color, label):
        vals = [r[key]["axis"] for r in rounds]
        ax.plot(xs, [v["value"] for v in vals], "o-", color=color, label=label)
        ax.fill_between(xs, [v["lo"] for v in vals], [v["hi"] for v in vals], color=color, alpha=0.15)

    for ref, color, label in (("base", "black", "base"), ("prompt_baseline", "tab:purple", "prompt-only")):
        v = summary[ref]["axis"]
        a.axhline(v["value"], color=color, ls="--", label=label)
        a.axhspan(v["lo"], v["hi"], color=color, alpha=0.07)
    band(a, "steered", "tab:red", "steered")
    band(a, "healed", "tab:green", "healed")
    a.set(title=f"(A) {axis} ({unit}) over rounds", xlabel="round", ylabel=f"{axis} {unit}", xticks=xs)
    a.legend(fontsize=8)

    floor = 1e-4
    b.plot(xs, [max(1 - r["steered"]["pmass"], floor) for r in rounds], "o-", color="tab:red", label="steered")
    b.plot(xs, [max(1 - r["healed"]["pmass"], floor) for r in rounds], "o-", color="tab:green", label="healed")
    b.axhline(max(1 - summary["base"]["pmass"], floor), color="black", ls="--", label="base")
    b.axhline(max(1 - summary["prompt_baseline"]["pmass"], floor), color="tab:purple", ls="--", label="prompt-only")
    b.set_yscale("log")
    b.set(title="(B) incoherence 1 - pmass (log)", xlabel="round", xticks=xs)
    b.legend(fontsize=8)

    for r in rounds:
        ax_d = r["healed_vs_base"]["axis"] or {}
        off = r["healed_vs_base"]["largest_off_target"] or {}
        if ax_d and off:
            c.errorbar(off["delta"], ax_d["delta"], xerr=[[off["delta"] - off["lo"]], [off["hi"] - off["delta"]]],
                       yerr=[[ax_d["delta"] - ax_d["lo"]], [ax_d["hi"] - ax_d["delta"]]], fmt="o", color="tab:green")
            c.annotate(f"r{r['round'] + 1} ({off['name']})", (off["delta"], ax_d["delta"]), fontsize=8)
    c.axhline(0, color="grey", lw=0.5)
    c.axvline(0, color="grey", lw=0.5)
    c.set(title="(C) healed - base: axis vs largest off-target", xlabel="largest off-target mover delta",
          ylabel=f"{axis} delta")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _read(path: Path, key: str = "text") -> str:
    return json.loads(path.read_text())[key] if path.exists() else "(missing)"


def render(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    png = run_dir / "trajectory.png"
    _plot(summary, png)
    img = base64.b64encode(png.read_bytes()).decode()
    rows = "".join(
        f"<tr><td>{r['round'] + 1}</td><td>{r['coeff']:.3f}</td><td>{r['kept']}/{r['total']}</td>"
        f"<td>{r['steered']['axis']['value']:.3f}</td><td>{r['healed']['axis']['value']:.3f} "
        f"[{r['healed']['axis']['lo']:.3f}, {r['healed']['axis']['hi']:.3f}]</td>"
        f"<td>{r['steered']['pmass']:.3f}</td><td>{r['healed']['pmass']:.3f}</td>"
        f"<td>{r['cos_v_v0']:.3f}</td><td>{r['student_cos_teacher']:.3f}</td>"
        f"<td>{html.escape(json.dumps(r['dropped_by']))}</td></tr>" for r in summary["rounds"])
    diary = [("Base", _read(run_dir / "base_diary.json"))]
    for r in summary["rounds"]:
        rd = run_dir / "rounds" / f"r{r['round']:02d}"
        diary += [(f"Round {r['round'] + 1}: steered (coeff {r['coeff']:.2f})", _read(rd / "diary_steered.json")),
                  (f"Round {r['round'] + 1}: healed", _read(rd / "diary_healed.json"))]
    prompt = _read(run_dir / "base_diary.json", "prompt")
    diary_html = "".join(f"<h4>{html.escape(t)}</h4><p class=d>{html.escape(x)}</p>" for t, x in diary)
    b, p = summary["base"], summary["prompt_baseline"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>steerheal run</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}p.d{{white-space:pre-wrap;background:#f6f6f6;padding:8px}}
</style></head><body>
<h1>steerheal: {html.escape(summary['model'])}, pair {html.escape(summary['pair'])}</h1>
<p>Axis <b>{html.escape(summary['axis'])}</b> ({summary['protocol']} on {html.escape(summary['dataset'])}).
Base {b['axis']['value']:.3f} [{b['axis']['lo']:.3f}, {b['axis']['hi']:.3f}], pmass {b['pmass']:.3f};
prompt-only baseline {p['axis']['value']:.3f} [{p['axis']['lo']:.3f}, {p['axis']['hi']:.3f}], pmass {p['pmass']:.3f}.
{html.escape(summary['stopped_early'] or '')}</p>
<img src="data:image/png;base64,{img}" style="width:100%">
<h2>Rounds</h2><table><tr><th>round</th><th>coeff</th><th>kept</th><th>steered axis</th>
<th>healed axis [95% CI]</th><th>steered pmass</th><th>healed pmass</th><th>cos(v_r, v_0)</th>
<th>student cos teacher</th><th>dropped by</th></tr>{rows}</table>
<h2>Diary</h2><p>Prompt: <i>{html.escape(prompt)}</i> (greedy)</p>{diary_html}
</body></html>"""
    return write_text(run_dir / "report.html", page)
