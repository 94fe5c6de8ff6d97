"""The steer-heal loop (DESIGN.md section 7), one resumable stage at a time.

Round r: extract v_r on the current student -> dose (iso-KL coefficient, then walk-C) ->
generate steered completions -> filter against the original model -> evaluate the steered
student -> heal (a fresh LoRA on the kept completions) -> evaluate the healed student ->
record. The base model and the prompt-only baseline are evaluated once, before round 0.
Every stage seeds torch from (seed, round, stage), saves its artefacts atomically and then
logs an event, so `resume` reloads finished stages and reproduces an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from . import data
from .chat import render_prompt
from .config import EvalConfig, ExtractConfig, GenerateConfig, RunConfig
from .dose import calibrate, walk_c
from .errors import SteerhealError
from .evals import compare, evaluate, load_dataset
from .evals.stats import estimate
from .evals.vignettes import FOUNDATIONS
from .filters import filter_completions
from .generate import Completion, generate
from .heal.adapters import AdapterHistory
from .heal.data import make_example
from .heal.train import heal_round
from .models import load_model
from .resources import lora_bytes, memory_warning, require_disk, run_disk_bytes
from .runs import RunDir, atomic_dir, write_json, write_text
from .steering import SteeringVector, SteerSpec, extract, read_activations
from .steering.layers import parse_layers


def _seed(base: int, round_: int | None, stage: str) -> int:
    digest = hashlib.sha256(f"{base}/{round_}/{stage}".encode()).hexdigest()
    return int(digest[:8], 16)


def load_run_history(lm, run_dir: str | Path) -> AdapterHistory:
    """Attach every healed round's adapter of a run directory to `lm`, in order."""
    run_dir = Path(run_dir)
    history = AdapterHistory(lm)
    for rd in sorted((run_dir / "rounds").glob("r[0-9][0-9]")):
        name = rd.name
        if (rd / "adapter" / name / "adapter_config.json").is_file():
            history.attach(rd / "adapter" / name, name)
    if not history.names:
        raise SteerhealError(f"{run_dir} has no healed round adapters", "run at least one round first")
    return history


def load_preset(name: str) -> dict:
    from importlib import resources

    path = resources.files("steerheal").joinpath("data", "presets", f"{name}.json")
    if not path.is_file():
        names = sorted(p.name[:-5] for p in resources.files("steerheal").joinpath("data", "presets").iterdir()
                       if p.name.endswith(".json"))
        raise SteerhealError(f"unknown preset {name!r}", f"use one of {names}")
    return json.loads(path.read_text())


class SteerHealLoop:
    def __init__(self, cfg: RunConfig, out: str | Path, *, resume: bool = False, log=print):
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise SteerhealError(f"output path {out} is a file", "choose a directory for --out")
        if out.exists() and any(out.iterdir()) and not resume:
            raise SteerhealError(f"output directory {out} is not empty",
                                 "pass --resume to continue that run, or choose a new --out")
        saved = out / "config.json"
        if resume and saved.exists():
            stored = RunConfig.from_dict(json.loads(saved.read_text()), where=str(saved))
            cfg = RunConfig.from_dict({**asdict(stored), "rounds": cfg.rounds})
        self.cfg = cfg
        self.log = log
        # Everything that can reject the config runs before the first byte is written.
        self.pair = data.persona_pair(cfg.pair)
        self.axis = cfg.axis or self.pair.target_foundation or "Care"
        if self.axis not in FOUNDATIONS:
            raise SteerhealError(f"unknown axis {self.axis!r}", f"use one of {list(FOUNDATIONS)}")
        contexts = data.contexts()
        self.extract_contexts = contexts[: cfg.n_contexts]
        self.pool = contexts[cfg.n_contexts:] or contexts
        held = data.heldout_prompts()
        self.diary_prompt = cfg.diary_prompt or next((p for p in held if "diary" in p.lower()), held[0])
        self.calib_prompts = [p for p in held if p != self.diary_prompt]
        self.items = load_dataset(cfg.eval_dataset, cfg.eval_data_dir, cfg.eval_limit)
        self.eval_cfg = EvalConfig(protocol=cfg.eval_protocol)
        # A generous bound until the model is loaded (a 4k-wide, 48-block model's adapters).
        require_disk(out, run_disk_bytes(cfg.rounds, lora_bytes(4096, 48, cfg.heal.lora_rank, cfg.heal.lora_band)),
                     f"a {cfg.rounds}-round run")
        self.run = RunDir(out)
        write_json(saved, asdict(cfg))
        self.lm = None
        self.history: AdapterHistory | None = None
        self.v0: SteeringVector | None = None

    # ----- helpers -------------------------------------------------------------------------
    def _stage(self, stage: str, r: int | None) -> dict | None:
        done = self.run.done(stage, r)
        torch.manual_seed(_seed(self.cfg.seed, r, stage))
        return done

    def _gen_prompts(self, r: int) -> list[str]:
        n = self.cfg.n_prompts
        start = (r * n) % len(self.pool)
        return [self.pool[(start + i) % len(self.pool)] for i in range(n)]

    def _original(self):
        """A factory of contexts in which the model is the original (all adapters gated off)."""
        return (lambda: self.history.reference("base")) if self.history.names else None

    def _diary(self, steer=()) -> str:
        cfg = GenerateConfig(max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        return generate(self.lm, [self.diary_prompt], steer=steer, config=cfg)[0].completion

    def _eval(self, path: Path, steer=(), system=None) -> dict:
        cfg = self.eval_cfg if system is None else EvalConfig(protocol=self.cfg.eval_protocol, system=system)
        result = evaluate(self.lm, self.items, cfg, dataset=self.cfg.eval_dataset, steer=steer,
                          desc="eval").to_dict()
        write_json(path, result)
        return result

    # ----- stages --------------------------------------------------------------------------
    def setup(self) -> None:
        self.lm = load_model(self.cfg.model, self.cfg.device, self.cfg.dtype, seed=self.cfg.seed)
        self.history = AdapterHistory(self.lm)
        self._check_resources()
        root = self.run.path
        if not self._stage("baseline", None):
            self.log("baseline: evaluating the base model and the prompt-only baseline")
            self._eval(root / "base_eval.json")
            self._eval(root / "prompt_eval.json", system=self.pair.pos)
            write_json(root / "base_diary.json", {"prompt": self.diary_prompt, "text": self._diary()})
            self.run.log("baseline")

    def _check_resources(self) -> None:
        cfg, lm = self.cfg, self.lm
        adapter = lora_bytes(lm.d_model, lm.n_layers, cfg.heal.lora_rank, cfg.heal.lora_band)
        require_disk(self.run.path, run_disk_bytes(cfg.rounds, adapter), f"a {cfg.rounds}-round run")
        from .generate import default_batch_size

        checks = [(default_batch_size(lm), 256 + cfg.max_new_tokens, False, "generation"),
                  (cfg.heal.batch_size, cfg.heal.max_len, True, "heal"),
                  (self.eval_cfg.batch_size, 512, False, "evaluation")]
        for batch, seq, training, what in checks:
            warning = memory_warning(lm, batch, seq, training=training, what=what)
            if warning:
                self.log(warning)

    def round(self, r: int) -> dict:
        rd = self.run.round_dir(r)
        vec = self._extract(r, rd)
        if r == 0:
            self.v0 = vec
        dose = self._dose_stage(r, rd, vec)
        spec = [SteerSpec(vec, dose["coeff"])]
        recs = self._generate(r, rd, spec)
        report = self._filter_stage(r, rd, recs)
        if not self._stage("eval_steered", r):
            self._eval(rd / "eval_steered.json", steer=spec)
            write_json(rd / "diary_steered.json", {"text": self._diary(spec)})
            self.run.log("eval_steered", r)
        heal = self._heal(r, rd, recs, report)
        if not self._stage("eval_healed", r):
            self._eval(rd / "eval_healed.json")
            write_json(rd / "diary_healed.json", {"text": self._diary()})
            write_json(rd / "student_vector.json", self._student_vector(vec))
            self.run.log("eval_healed", r)
        return self._record(r, vec, dose, report, heal)

    def _extract(self, r: int, rd: Path) -> SteeringVector:
        if self._stage("extract", r):
            return SteeringVector.load(rd / "vector.safetensors")
        vec = extract(self.lm, self.pair.pos, self.pair.neg, self.extract_contexts,
                      ExtractConfig(layers=self.cfg.layers), progress_desc=f"r{r} extract")
        vec.save(rd / "vector.safetensors")
        self.run.log("extract", r, norms=vec.norms)
        return vec

    def _dose_stage(self, r: int, rd: Path, vec: SteeringVector) -> dict:
        if self._stage("dose", r):
            return json.loads((rd / "dose.json").read_text())
        dose = self._dose(r, vec)
        write_json(rd / "dose.json", dose)
        self.run.log("dose", r, coeff=dose["coeff"])
        return dose

    def _sample(self, prompts: list[str], spec, seed: int, n: int = 1, desc: str | None = None) -> list[Completion]:
        gen = GenerateConfig(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature, seed=seed)
        return generate(self.lm, prompts, steer=spec, n=n, config=gen, desc=desc)

    def _filter(self, recs: list[Completion]):
        return filter_completions(self.lm, recs, self.cfg.filters, narration=self.pair.narration
                                  + data.generic_narration(), refusals=data.refusal_phrases(),
                                  original=self._original())

    def _generate(self, r: int, rd: Path, spec) -> list[Completion]:
        path = rd / "completions.jsonl"
        if self._stage("generate", r):
            return [Completion(**json.loads(line)) for line in path.read_text().splitlines()]
        recs = self._sample(self._gen_prompts(r), spec, _seed(self.cfg.seed, r, "sample"), self.cfg.n_per_prompt,
                            desc=f"r{r} generate")
        write_text(path, "".join(json.dumps(c.to_dict()) + "\n" for c in recs))
        self.run.log("generate", r, n=len(recs))
        return recs

    def _filter_stage(self, r: int, rd: Path, recs: list[Completion]) -> dict:
        if self._stage("filter", r):
            report = json.loads((rd / "filter.json").read_text())
        else:
            report = self._filter(recs).to_dict()
            write_json(rd / "filter.json", report)
            self.run.log("filter", r, kept=len(report["kept"]), total=len(recs), dropped_by=report["dropped_by"])
        if not report["kept"]:
            dropped = report["dropped_by"]
            worst = max(dropped, key=dropped.get) if dropped else "?"
            knob = {"tail_ppl": "filters.max_tail_ppl", "repetition": "filters.max_repetition",
                    "narration": "filters.max_narration", "refusal": "filters.refusal",
                    "empty": "filters.min_tokens", "judge": "filters.max_judge"}.get(worst, "the filters")
            raise SteerhealError(f"round {r}: 0 of {len(recs)} completions passed the filters (most dropped by "
                                 f"'{worst}': {dropped})",
                                 f"loosen {knob} or lower dose.target_pass; earlier rounds are kept, "
                                 "continue with --resume")
        return report

    def _heal(self, r: int, rd: Path, recs: list[Completion], report: dict) -> dict:
        name = f"r{len(self.history.names):02d}"
        if self._stage("heal", r):
            self.history.attach(rd / "adapter" / name, name)
            return json.loads((rd / "heal.json").read_text())
        tok, hc = self.lm.tokenizer, self.cfg.heal
        examples = [make_example(tok, recs[i].prompt_text, recs[i].completion, recs[i].token_ids, recs[i].finished,
                                 hc.max_len, tok.eos_token_id) for i in report["kept"]]
        result = heal_round(self.history, examples, hc, rounds_baked=len(self.history.names), desc=f"r{r} heal")
        with atomic_dir(rd / "adapter") as tmp:
            self.history.save(tmp, names=[result.adapter])
        heal = result.to_dict()
        write_json(rd / "heal.json", heal)
        self.run.log("heal", r, adapter=result.adapter, val=result.val)
        return heal

    def _dose(self, r: int, vec: SteeringVector) -> dict:
        cfg = self.cfg
        cal = calibrate(self.lm, vec, self.calib_prompts, cfg.calibrate, desc=f"r{r} calibrate")
        prompts = self._gen_prompts(r)

        def probe(coeff, offset, count):
            window = [prompts[(offset + i) % len(prompts)] for i in range(count)]
            return self._filter(self._sample(window, [SteerSpec(vec, coeff)], _seed(cfg.seed, r, f"probe{offset}")))

        walk = walk_c(probe, cal.coeff, len(prompts), target_pass=cfg.dose.target_pass,
                      per_probe=cfg.dose.per_probe, max_probes=cfg.dose.max_probes,
                      log=lambda p: self.log(f"  r{r} walk-C: kappa {p.kappa:.3g} coeff {p.coeff:.3g} "
                                             f"pass {p.pass_rate:.2f}"))
        self.log(f"r{r} dose: iso-KL coeff {cal.coeff:.3f} (p95 KL {cal.stats.p95:.3f}), walk-C kappa "
                 f"{walk.kappa:.3g} -> coeff {walk.coeff:.3f}")
        return {"coeff": walk.coeff, "calibration": cal.to_dict(), "walk": walk.to_dict()}

    @torch.no_grad()
    def _student_vector(self, teacher: SteeringVector) -> dict:
        """h_student - h_base at the assistant tag under neutral prompts, and its cosine with v_r, v_0."""
        texts = [render_prompt(self.lm.tokenizer, p) for p in self.calib_prompts[:16]]
        layers = parse_layers(teacher.layers, self.lm.n_layers)
        student = read_activations(self.lm, texts, layers)
        with self.history.reference("base"):
            base = read_activations(self.lm, texts, layers)
        sv = SteeringVector({k: (student[k] - base[k]).mean(0) for k in layers}, d_model=self.lm.d_model)
        cos_t = sv.cosine(teacher)
        cos_0 = sv.cosine(self.v0)
        return {"norms": sv.norms, "cos_teacher": cos_t, "cos_v0": cos_0,
                "mean_cos_teacher": sum(cos_t.values()) / len(cos_t), "mean_cos_v0": sum(cos_0.values()) / len(cos_0)}

    def _record(self, r: int, vec, dose, report, heal) -> dict:
        rd = self.run.round_dir(r)
        steered = json.loads((rd / "eval_steered.json").read_text())
        healed = json.loads((rd / "eval_healed.json").read_text())
        base = json.loads((self.run.path / "base_eval.json").read_text())
        cmp = compare(base, healed, axis=self.axis, n_resamples=1000, seed=self.cfg.seed)
        sv = json.loads((rd / "student_vector.json").read_text())
        cos_v0 = vec.cosine(self.v0)
        rec = {"round": r, "coeff": dose["coeff"], "c_iso": dose["calibration"]["coeff"],
               "kappa": dose["walk"]["kappa"], "dose_reached": dose["walk"]["reached"],
               "kept": len(report["kept"]), "total": len(report["scores"]), "dropped_by": report["dropped_by"],
               "cos_v_v0": sum(cos_v0.values()) / len(cos_v0),
               "student_cos_teacher": sv["mean_cos_teacher"], "student_cos_v0": sv["mean_cos_v0"],
               "steered": {"axis": estimate(steered, self.axis, seed=self.cfg.seed),
                           "pmass": steered["summary"]["pmass"]},
               "healed": {"axis": estimate(healed, self.axis, seed=self.cfg.seed),
                          "pmass": healed["summary"]["pmass"]},
               "healed_vs_base": {"axis": cmp["axis_delta"], "largest_off_target": cmp["largest_off_target"]},
               "heal_val": heal.get("val", {}), "heal_steps": len(heal.get("steps", []))}
        write_json(rd / "round.json", rec)
        if not self.run.done("record", r):
            self.run.log("record", r)
        return rec

    def summary(self, rounds: list[dict], stopped: str | None) -> dict:
        base = json.loads((self.run.path / "base_eval.json").read_text())
        prompt = json.loads((self.run.path / "prompt_eval.json").read_text())
        out = {"model": self.cfg.model, "pair": self.cfg.pair, "axis": self.axis,
               "protocol": self.cfg.eval_protocol, "dataset": self.cfg.eval_dataset,
               "base": {"axis": estimate(base, self.axis, seed=self.cfg.seed), "pmass": base["summary"]["pmass"]},
               "prompt_baseline": {"axis": estimate(prompt, self.axis, seed=self.cfg.seed),
                                   "pmass": prompt["summary"]["pmass"]},
               "rounds": rounds, "stopped_early": stopped}
        write_json(self.run.path / "summary.json", out)
        return out

    def run_all(self) -> dict:
        self.setup()
        base_pmass = json.loads((self.run.path / "base_eval.json").read_text())["summary"]["pmass"]
        rounds, stopped = [], None
        for r in range(self.cfg.rounds):
            self.log(f"round {r}")
            rec = self.round(r)
            rounds.append(rec)
            self.log(f"round {r}: coeff {rec['coeff']:.3f}, kept {rec['kept']}/{rec['total']}, "
                     f"{self.axis} healed {rec['healed']['axis']['value']:.3f} steered "
                     f"{rec['steered']['axis']['value']:.3f}, pmass healed {rec['healed']['pmass']:.3f}")
            if rec["healed"]["pmass"] < self.cfg.coherence_floor * base_pmass:
                stopped = (f"round {r}: healed pmass {rec['healed']['pmass']:.3f} fell below "
                           f"{self.cfg.coherence_floor} x base {base_pmass:.3f}")
                self.run.log("early_stop", r, reason=stopped)
                self.log(stopped)
                break
        summary = self.summary(rounds, stopped)
        from .report import render

        render(self.run.path)
        self.run.log("done")
        return summary
