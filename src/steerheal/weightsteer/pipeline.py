"""The two weight-steering jobs behind the CLI: train a directory of dW, compare it.

A train directory holds:
  config.json            model spec/revision, pair, WeightSteerConfig
  samples.jsonl          persona-conditioned samples (side, prompt, completion, filter scores)
  <kind>.safetensors     dW for each adapter type (WeightDelta format)
  train.json             per type: seconds per side, loss curves, trainable parameters, dW bytes
Every file is written atomically; a rerun skips the samples and the types already trained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import GenerateConfig, WeightSteerConfig, WeightSteerRun
from ..data import contexts, persona_pair, read_jsonl
from ..errors import SteerhealError
from ..evals.claims import load_claims
from ..evals.vignettes import load_dataset
from ..generate import Completion, sampling_kwargs
from ..models import load_model
from ..runs import ensure_writable_dir, write_json, write_text
from .compare import CompareSettings, MethodComparison, format_table, legend, summarise, write_outputs
from .delta import WeightDelta
from .kinds import parse_kinds, skipped_kinds
from .train import keep_coherent, persona_samples, train_delta


def _check_config(out: Path, meta: dict) -> None:
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        same = {k: v for k, v in old.items() if k != "kinds"} == {k: v for k, v in meta.items() if k != "kinds"}
        if not same:
            raise SteerhealError(f"{out} already holds weight-steering adapters trained with other settings",
                                 "choose a new --out directory (or repeat the original settings)")


def _samples(lm, pair, cfg: WeightSteerConfig, out: Path, log) -> dict[str, list[Completion]]:
    path = out / "samples.jsonl"
    if path.is_file():
        rows = read_jsonl(path)
    else:
        samples = persona_samples(lm, pair, contexts()[: cfg.n_prompts], cfg, desc="sample personas")
        rows = []
        for side, recs in samples.items():
            kept = keep_coherent(lm, recs, pair) if cfg.filter else set(range(len(recs)))
            rows += [r.to_dict() | {"side": side, "kept": i in kept} for i, r in enumerate(recs)]
        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    by_side: dict[str, list[Completion]] = {"pos": [], "neg": []}
    for r in rows:
        if r["kept"]:
            by_side[r["side"]].append(Completion(**{k: v for k, v in r.items() if k not in ("side", "kept")}))
    log(f"samples kept: pos {len(by_side['pos'])}, neg {len(by_side['neg'])} of {cfg.n_prompts * cfg.n_per_prompt} "
        "each")
    return by_side


def train_dir(model: str, pair_name: str, kinds: str | Sequence[str], out: str | Path,
              cfg: WeightSteerConfig | None = None, *, device: str | None = None, dtype: str | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Sample, then train theta+/theta- and save dW for every requested adapter type."""
    cfg = cfg or WeightSteerConfig()
    if isinstance(kinds, str) and kinds.strip().lower() == "all":
        for kind, reason in skipped_kinds().items():
            log(f"{kind}: skipped ({reason})")
    kinds = parse_kinds(kinds)
    pair = persona_pair(pair_name)
    out = ensure_writable_dir(Path(out))
    load = lambda: load_model(model, device, dtype, seed=cfg.seed)
    lm = load()
    sampling = sampling_kwargs(lm, GenerateConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                                  seed=cfg.seed))
    meta = {"model": lm.spec, "revision": lm.revision, "device": device, "dtype": dtype, "pair": pair.name,
            "kinds": kinds, "config": asdict(cfg), "sampling": {"max_new_tokens": cfg.max_new_tokens, **sampling}}
    _check_config(out, json.loads(json.dumps(meta)))
    write_json(out / "config.json", meta)
    samples = _samples(lm, pair, cfg, out, log)
    del lm
    record_path = out / "train.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for kind in kinds:
        path = out / f"{kind}.safetensors"
        if path.is_file() and kind in record:
            log(f"{kind}: already trained ({path})")
            continue
        t0 = time.perf_counter()
        delta, sides = train_delta(load, kind, samples, cfg, desc=f"train {kind}",
                                   info={"model": meta["model"], "revision": meta["revision"], "pair": pair.name})
        delta.save(path, dtype=getattr(torch, cfg.store_dtype))
        record[kind] = {"sides": [s.to_dict() for s in sides], "seconds": time.perf_counter() - t0,
                        "dW_bytes": path.stat().st_size, "n_dense": len(delta.dense_parts),
                        "n_factored": len(delta.factors), "norm": delta.norm()}
        write_json(record_path, record)
        log(f"{kind}: trained in {record[kind]['seconds']:.1f} s, dW {record[kind]['dW_bytes'] / 1e6:.1f} MB "
            f"({len(delta.factors)} factored, {len(delta.dense_parts)} dense), |dW| {record[kind]['norm']:.3g}")
    return record


def load_deltas(directory: Path, kinds: Sequence[str] | None = None) -> list[WeightDelta]:
    meta = json.loads((directory / "config.json").read_text())
    chosen = list(kinds) if kinds else meta["kinds"]
    missing = [k for k in chosen if not (directory / f"{k}.safetensors").is_file()]
    if missing:
        raise SteerhealError(f"{directory} has no trained dW for {missing}",
                             f"run `steerheal weight-steer train ... --adapter {','.join(missing)} --out {directory}`")
    return [WeightDelta.load(directory / f"{k}.safetensors") for k in chosen]


def compare_dir(directory: str | Path, settings: CompareSettings, out: str | Path, *, data_dir: str | None = None,
                limit: int | None = None, kinds: Sequence[str] | None = None, claims_path: str | None = None,
                parts_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Evaluate base, prompting, the activation vector and every dW of `directory` at matched KL.

    Finished rows are cached in `parts_dir` (default `<out>.parts/`); comparisons that share it
    share every row whose inputs they share (a sweep over alpha computes the base row once)."""
    directory, out = Path(directory), Path(out)
    if not (directory / "config.json").is_file():
        raise SteerhealError(f"{directory} is not a weight-steering directory (no config.json)",
                             "run `steerheal weight-steer train --out DIR` first")
    meta = json.loads((directory / "config.json").read_text())
    deltas = load_deltas(directory, kinds)
    lm = load_model(meta["model"], meta.get("device"), meta.get("dtype"), seed=meta["config"]["seed"])
    for delta in deltas:
        delta.check_compatible(lm)
    pair = persona_pair(meta["pair"])
    items = load_dataset(settings.dataset, data_dir, limit)
    parts = ensure_writable_dir(Path(parts_dir) if parts_dir else out.parent / f"{out.name}.parts")
    comparison = MethodComparison(lm, pair, items, load_claims(claims_path), settings, parts, log)
    rows = comparison.run(deltas)
    summary = summarise(rows, pair.target_foundation, settings.n_resamples)
    write_outputs(out, summary, settings, {"weights_dir": str(directory), "model": lm.spec, "pair": pair.name})
    log(legend(summary))
    log(format_table(summary))
    return summary


def run_job(job: WeightSteerRun, train_out: str | Path, out: str | Path, train_kinds: Sequence[str] | None = None,
            *, log: Callable[[str], None] = print) -> dict:
    """One weight-steering run (a sweep task): train (or reuse) the dW in `train_out`, compare it.

    `train_kinds` are trained together (every adapter type the runs sharing `train_out` need);
    the comparison of `job.kind` goes to `out/compare.json` and `.md`, its row cache beside the
    training so runs sharing a training share rows too."""
    train_out, out = Path(train_out), Path(out)
    train_dir(job.model, job.pair, list(train_kinds or [job.kind]), train_out, job.train, device=job.device,
              dtype=job.dtype, log=log)
    return compare_dir(train_out, job.compare, out / "compare.json", data_dir=job.data_dir, limit=job.limit,
                       kinds=[job.kind], claims_path=job.claims, parts_dir=train_out / "compare.parts", log=log)
