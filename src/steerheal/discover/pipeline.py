"""`discover search` and `discover score`: the directory they share, and the catalogue.

DIR/search.json          model, revision, method, settings, one record per search (trace, files)
DIR/directions/dNN.safetensors   each found direction as a normal SteeringVector
DIR/adapters/aNN.safetensors     divergence only: the trained write (for the linearity score)
DIR/catalogue.json       scores, dose-response and sample completions per direction
DIR/catalogue.html       each direction's samples at -c, 0 and +c
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from ..config import DiscoverConfig, ScoreConfig
from ..errors import SteerhealError
from ..models import LoadedModel
from ..runs import ensure_writable_dir, write_json, write_text
from ..steering.vector import SteeringVector
from .divergence import direction_of, train_writes
from .judge import make_judge
from .melbo import layers_for, melbo
from .prompts import load_prompts, raw_text
from .score import check_direction, completions, dose_response, linearity
from .writes import BlockWrites


def search(lm: LoadedModel, cfg: DiscoverConfig, out: str | Path, log=print) -> dict:
    out = Path(out)
    if (out / "search.json").exists():
        raise SteerhealError(f"{out} already holds a search", "choose a new --out directory")
    train = load_prompts("train")
    if cfg.method == "melbo":
        layers_for(lm, cfg)  # bad source/target blocks fail before anything is written
    ensure_writable_dir(out / "directions")
    records = []
    if cfg.method == "melbo":
        vectors, traces = melbo(lm, train, cfg)
        for i, (v, trace) in enumerate(zip(vectors, traces, strict=True)):
            v.save(out / "directions" / f"d{i:02d}.safetensors")
            records.append({"index": i, "seed": cfg.seed, "objective": trace,
                            "direction": f"directions/d{i:02d}.safetensors"})
    else:
        ensure_writable_dir(out / "adapters")
        all_texts = [raw_text(lm.tokenizer, p) for p in train + load_prompts("test")]
        for i in range(cfg.n):
            seed = cfg.seed + 1000 * i
            writes, trace = train_writes(lm, train, cfg, seed)
            vector = direction_of(lm, writes, all_texts, seed)
            check_direction(vector, f"d{i:02d}")
            writes.save(out / "adapters" / f"a{i:02d}.safetensors")
            vector.save(out / "directions" / f"d{i:02d}.safetensors")
            stop = f" (KL budget reached at step {trace.stopped_at})" if trace.stopped_at is not None else ""
            log(f"search {i}: KL to base {trace.kl[0]:.3f} -> {trace.kl[-1]:.3f}, "
                f"NLL of own samples {trace.nll[0]:.2f} -> {trace.nll[-1]:.2f}{stop}")
            records.append({"index": i, **asdict(trace), "direction": f"directions/d{i:02d}.safetensors",
                            "adapter": f"adapters/a{i:02d}.safetensors"})
    record = {"model": lm.spec, "revision": lm.revision, "method": cfg.method, "config": asdict(cfg),
              "searches": records}
    write_json(out / "search.json", record)
    return record


def load_search(directory: str | Path, lm: LoadedModel | None = None) -> dict:
    directory = Path(directory)
    path = directory / "search.json"
    if not path.is_file():
        raise SteerhealError(f"{directory} is not a discovery directory (no search.json)",
                             "run `steerheal discover search --out DIR` first")
    record = json.loads(path.read_text())
    if lm is not None and (record["model"], record["revision"]) != (lm.spec, lm.revision):
        raise SteerhealError(f"{directory} was searched on {record['model']} ({record['revision']}), not on {lm.spec}",
                             f"score it with --model {record['model']}")
    return record


def score_dir(lm: LoadedModel, directory: str | Path, cfg: ScoreConfig, judge_url: str | None = None,
              judge_key: str | None = None, judge_model: str | None = None, log=print) -> dict:
    directory = Path(directory)
    record = load_search(directory, lm)
    vectors = [SteeringVector.load(directory / s["direction"]) for s in record["searches"]]
    for v, s in zip(vectors, record["searches"], strict=True):
        v.check_compatible(lm)
        check_direction(v, s["direction"])
    judge = make_judge(judge_url, judge_key, judge_model)
    local = make_judge()
    texts = [raw_text(lm.tokenizer, p) for p in load_prompts("test")[: cfg.n_eval]]
    base = completions(lm, texts, cfg)
    if record["method"] == "divergence":
        adapters = [BlockWrites.load(directory / s["adapter"]).to(lm.device) for s in record["searches"]]
        scores = linearity(lm, judge, texts, base, adapters, vectors, cfg)
    else:
        scores = [{"linearity": None, "null_random": None, "null_shuffled": None,
                   "note": "a MELBO vector is itself a direction: no adapter to compare with"} for _ in vectors]
    entries = []
    for i, (v, s, sc) in enumerate(zip(vectors, record["searches"], scores, strict=True)):
        log(f"direction {i}: linearity {sc['linearity']}, dose-response ...")
        entries.append({"id": f"d{i:02d}", "file": s["direction"], "method": record["method"],
                        "norms": v.norms, **sc, "dose": dose_response(lm, local, v, texts, cfg)})
    catalogue = {"model": lm.spec, "revision": lm.revision, "method": record["method"], "judge": judge.name,
                 "settings": asdict(cfg), "directions": entries}
    write_json(directory / "catalogue.json", catalogue)
    write_text(directory / "catalogue.html", catalogue_html(catalogue))
    return catalogue


def summary_table(catalogue: dict) -> str:
    heads = ["direction", "linearity", "null: random", "null: shuffled", "iso-KL coeff", "? per completion (-c/0/+c)",
             "length (-c/0/+c)", "sentiment (-c/0/+c)"]

    def fmt(x):
        return "-" if x is None else f"{x:.3f}"

    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for e in catalogue["directions"]:
        rows = {r["coeff"]: r for r in e["dose"]["rows"]}
        ends = [min(rows), 0.0, max(rows)]

        def triple(key, rows=rows, ends=ends):
            return " / ".join(f"{rows[c][key]:.2f}" for c in ends)

        lines.append("| " + " | ".join([e["id"], fmt(e["linearity"]), fmt(e["null_random"]), fmt(e["null_shuffled"]),
                                         fmt(e["dose"]["iso_kl_coeff"]), triple("question_marks"), triple("length"),
                                         triple("sentiment")]) + " |")
    return "\n".join(lines) + "\n"


def catalogue_html(catalogue: dict) -> str:
    parts = [f"<html><head><meta charset='utf-8'><title>steerheal discover: {html.escape(catalogue['model'])}</title>"
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{vertical-align:top;padding:4px;"
             "border:1px solid #ccc;white-space:pre-wrap;font-size:13px}</style></head><body>",
             f"<h1>Discovered directions: {html.escape(catalogue['model'])} ({catalogue['method']})</h1>",
             f"<p>Judge: {html.escape(catalogue['judge'])}. Completions of held-out prompts at the direction's "
             "coefficient -c, 0 and +c (c = the largest swept multiple).</p>"]
    for e in catalogue["directions"]:
        samples = e["dose"]["samples"]
        coeffs = sorted(samples, key=float)
        shown = [coeffs[0], "0.0", coeffs[-1]]
        parts.append(f"<h2>{e['id']}</h2><p>linearity {e['linearity']}, null (random) {e['null_random']}, "
                     f"null (shuffled) {e['null_shuffled']}, iso-KL coefficient {e['dose']['iso_kl_coeff']}</p>"
                     "<table><tr>" + "".join(f"<th>coefficient {c}</th>" for c in shown) + "</tr>")
        for row in zip(*(samples[c] for c in shown), strict=True):
            parts.append("<tr>" + "".join(f"<td>{html.escape(t)}</td>" for t in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
