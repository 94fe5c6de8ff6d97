"""Run the benchmark suite: `python -m bench [--smoke] [--write docs/benchmarks.md]`.

`--smoke` runs every benchmark on the tiny random model with tiny sizes (seconds), so CI
keeps the suite from rotting; the full run uses the embedded model.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

from steerheal.config import CalibrateConfig
from steerheal.models import load_model
from steerheal.runs import write_text

from . import calibration, evaluation, extraction, generation, heal, peers, profile, scaling, weightsteer
from .common import machine, table

INTRO = """# Benchmarks

Regenerate with `python -m bench --write docs/benchmarks.md` (the full suite on the embedded
model, about 15 minutes on 2 cores); `python -m bench --smoke` runs the same code on the tiny
model in two to three minutes (it is part of the test suite). Every figure is a median over
repeats; every ratio compares two measurements taken in the same run, interleaved in ABBA
order where both run in one process.

- *Generation*: plain `model.generate` (no hooks) vs the same call inside `steering()` with a
  vector on blocks 14-16, greedy, 32 new tokens forced. Target: steered / plain >= 0.95.
  Single runs on this 2-core VM vary by +-15%, hence interleaved repeats (3, median).
- *Extraction*: `extract()` (forward stopped after the deepest read block) vs a full forward
  with `output_hidden_states=True` on the same prompts and batch size; a context is one user
  message read under both personas (2 prompts). The cosine is below 1 only because our
  extraction sorts prompts by length into different bf16 batches (fp32 batch invariance is
  tested to > 0.99999).
- *Peers*: our `extract` against steering-vectors 0.12.2 (`train_steering_vector`, mean
  aggregator) and repeng 0.4.0 (`read_representations`, pca_diff) on the same rendered
  prompts, read token, layers and batch size, 128 contexts (`make bench-peers` installs them;
  without them the section says it was skipped). Target: ours / theirs >= 1.0 in speed, cosine >= 0.9999
  with steering-vectors' mean vector (checked on an fp32 copy over 16 contexts, see `bench/peers.py`).
- *Evaluation*: the full tiny-mfv classic set (132 vignettes) per protocol; forced-choice
  scores 2 option orders, json-bool 2 conditions x 2 frames. Target: < 60 s per protocol
  without think tokens. For reference, DESIGN.md reports 62 s (forced-choice, think budget 1)
  and 46 s (json-bool) for the published tiny-mfv code on the same kind of machine; we did
  not run that code here.
- *Heal step*: one optimiser step on 4 x 128 tokens (LoRA r=8 on 20-80% of blocks) as
  `heal_round` runs it, including the separate gradient passes that log each term's norm.
  Each configuration runs in its own process; memory is the peak resident set size above
  the process's size just before the timed steps. Targets: barrier step <= 2.2x the time and
  <= 1.5x the memory of an nll step. Peak RSS on the CPU is noisy (glibc keeps freed
  memory: the nll row measured 180 MB in one run and 387 MB in the next), so read the memory
  column as a check of the order of magnitude. A "split" step is one that also logs each
  term's gradient norm (a second backward); `heal_round` does that every `grad_norm_every`
  steps (default 10), all other steps are "combined".
- *Weight steering* (`--weightsteer` or `--only weightsteer`; not in the default run, which
  has to stay under 15 minutes, so its table is not below): per
  adapter type, theta+ and theta- trained on two sets of 8 random-token completions (64
  tokens, batch 8, 1 epoch) from fresh bases as `weight-steer train` does;
  seconds per optimiser step, dW on disk (parts of rank <= 2r stored as exact factors)
  against its dense fp32 size, and entering + leaving `WeightDelta.applied` with the size of
  its backup (only the touched tensors; never a model copy).
- *Scaling*: generation (greedy, forced length, the sampler's default batch) and one heal
  epoch (kl_rev + rmse, batch 8) on those completions, one factor at a time: length
  64/128/256 at 8 completions and count 16/64/256 at 8 tokens, on the tiny model and the
  embedded one; model size at the 64 x 8 point adds the 270M Gemma base from PyPI
  (`gemma3-270m`, plain-text prompts: it has no chat template). `scaling.png` plots seconds
  against generated tokens and against parameters on log-log axes with fitted slopes. The
  count sweep uses 8-token completions so its 256-completion point fits the 15-minute budget.
- *Calibration*: the care-over-authority vector calibrated to p95 token KL 0.5 / 1 / 2 nats
  with the loop's defaults; model evaluations and seconds to reach the 0.05-nat tolerance.
- *Profile*: cProfile of one dose stage (the slowest stage of a demo round) on the base
  model and with two stacked LoRA adapters, with the top entries by internal time.
- Think-phase evaluation rows (`--think`, not in the default run) are generation-bound (16
  greedy tokens for every prompt; the shared-prefix cache is not used while generating) and
  have no target.

The per-stage wall time of a `demo` loop run is in `docs/demo/README.md`
(`python -m bench.stages RUN_DIR` prints it for any run).

## Latest run

"""


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny model, tiny sizes (CI)")
    parser.add_argument("--model", default=None, help="model spec (default: smollm2-135m)")
    parser.add_argument("--think", action="store_true", help="also time evaluation with 16 think tokens "
                        "(generation-bound, no target; adds ~4 minutes)")
    parser.add_argument("--weightsteer", action="store_true", help="also run the weight-steering section (~2 "
                        "minutes; not in the default run, which must stay under 15 minutes)")
    parser.add_argument("--write", default=None, help="also write the report to this markdown file")
    parser.add_argument("--only", default=None, help="run one section: generation, extraction, calibration, peers, "
                        "evaluation, heal, scaling, profile, weightsteer")
    args = parser.parse_args(argv)
    os.environ.setdefault("STEERHEAL_NO_PROGRESS", "1")
    if args.smoke:
        lm = load_model(args.model or "tiny-random-llama", "cpu", torch.float32)
        gen_kw, ext_kw = dict(batch_sizes=(2,), new_tokens=4, repeats=1), dict(n_contexts=8, batch_size=4)
        eval_kw = dict(limit=4)
        peer_kw = dict(n_contexts=8, batch_size=4, n_cosine=4)
        scale_kw = dict(sweep_specs=(lm.spec,), size_specs=("tiny-random-gemma3",), lengths=(8, 16), counts=(4, 8),
                        length_base=4, count_base=8)
        prof_kw = dict(n_adapters=1, target_kl=0.01, n_prompts=8, new_tokens=8)
        cal_kw = dict(targets=(0.005, 0.01), n_contexts=8, cfg=CalibrateConfig(n_prompts=4, n_tokens=6, tol=0.001))
        heal_kw = dict(steps=1, length=32)
        ws_kw = dict(kinds=("lora", "ia3"), n=4, length=16, repeats=1)
    else:
        lm = load_model(args.model or "smollm2-135m")
        # Sizes chosen so the whole suite stays under 15 minutes on 2 cores (see the wall-time table).
        gen_kw, ext_kw = dict(batch_sizes=(1, 8, 32), new_tokens=32, repeats=3), dict(n_contexts=256)
        eval_kw = dict(think=(0, 16) if args.think else (0,))
        peer_kw = dict(n_contexts=128, n_cosine=16)
        scale_kw = dict()
        prof_kw = dict(n_adapters=2, n_prompts=8, new_tokens=32)
        cal_kw = dict()
        heal_kw = dict(steps=2, length=128)
        ws_kw = dict(n=8, length=64)
    plot_path = os.path.join(os.path.dirname(args.write) or ".", "scaling.png") if args.write else None
    sections = [f"Machine: {machine()}", f"Model: {lm.spec} ({lm.device}, {lm.dtype})"]
    print(sections[0], f"\n{sections[1]}", file=sys.stderr)
    runs = {
        "generation": ("Steered vs plain generation (greedy, fixed new tokens, median of repeats)",
                       lambda: generation.run(lm, **gen_kw)),
        "extraction": ("Vector extraction (mean_diff, default middle layers)", lambda: extraction.run(lm, **ext_kw)),
        "calibration": ("iso-KL calibration (p95 token KL; evaluations and time to tolerance)",
                        lambda: calibration.run(lm, **cal_kw)),
        "peers": ("Extraction vs the peer libraries (same model, prompts, read position and layers)",
                  lambda: peers.run(lm, **peer_kw)),
        "evaluation": ("tiny-mfv evaluation (both protocols, wall time including any think phase)",
                       lambda: evaluation.run(lm, **eval_kw)),
        "heal": ("Heal step (4 x 128 tokens, LoRA r=8, one optimiser step as heal_round runs it; peak extra "
                 "memory over the process before the first timed step)", lambda: heal.run(lm.spec, **heal_kw)),
        "scaling": ("Scaling of generation and one heal epoch with completion length, count and model (log-log "
                    "plot: scaling.png beside the report)",
                    lambda: scaling.run(**scale_kw, plot_path=plot_path)),
        "profile": ("Profile of the slowest loop stage (dose: iso-KL calibration + 4 walk-C probes)",
                    lambda: profile.run(lm, **prof_kw)),
        "weightsteer": ("Weight steering per adapter type (training step, dW storage, applying dW)",
                        lambda: weightsteer.run(lm.spec, **ws_kw)),
    }
    if args.only and args.only not in runs:
        parser.error(f"--only must be one of {sorted(runs)}")
    took = {}
    optional = {"weightsteer": args.weightsteer or args.smoke}
    for name, (title, fn) in runs.items():
        if args.only == name or (args.only is None and optional.get(name, True)):
            t0 = time.perf_counter()
            sections.append(f"### {title}\n\n" + fn()[0])
            took[name] = time.perf_counter() - t0
            print(f"[bench] {name}: {took[name]:.0f} s", file=sys.stderr)
    sections.append("### Wall time of this run\n\n" + table(
        ["section", "seconds"], [[k, f"{v:.0f}"] for k, v in took.items()] + [["total", f"{sum(took.values()):.0f}"]]))
    report = "\n\n".join(sections) + "\n"
    print(report)
    if args.write:
        cmd = "python -m bench" + (" --smoke" if args.smoke else "") + (" --think" if args.think else "") + \
            (" --weightsteer" if args.weightsteer else "") + (f" --only {args.only}" if args.only else "")
        header = (f"<!-- generated by `{cmd} --write {args.write}` on "
                  f"{datetime.date.today().isoformat()} -->\n\n")
        write_text(args.write, INTRO + header + report)
    return report


if __name__ == "__main__":
    main()
