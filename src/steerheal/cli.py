"""The command-line face: parse arguments, call one library function per command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import data
from .config import CalibrateConfig, ExtractConfig, GenerateConfig
from .errors import SteerhealError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Steer language models, then heal the steering into weights.")
vector_app = typer.Typer(no_args_is_help=True, help="Build, calibrate and export steering vectors.")
app.add_typer(vector_app, name="vector")
eval_app = typer.Typer(invoke_without_command=True, help="Evaluate on moral-foundations vignettes (tiny-mfv); "
                       "`eval compare A.json B.json` for paired deltas with CIs.")
app.add_typer(eval_app, name="eval")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model spec: embedded name, tiny-random-*, "
                                       "local dir, .gguf file or hub id.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, mps (default: best available).")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 (default: bf16 where supported).")]


def _echo_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
    typer.echo(line)
    typer.echo("  ".join("-" * w for w in widths))
    for r in rows:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


@app.command()
def models() -> None:
    """List the embedded and tiny model specs and whether each is ready locally."""
    from .models import list_specs

    _echo_table(["spec", "kind", "cached", "description"],
                [[r["spec"], r["kind"], "yes" if r["cached"] else "no", r["description"]] for r in list_specs()])


@app.command()
def pairs() -> None:
    """List the shipped persona pairs."""
    _echo_table(["name", "target", "axis"],
                [[p.name, p.target_foundation or "-", p.axis] for p in data.persona_pairs().values()])


@vector_app.command("extract")
def vector_extract(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")],
    pair: Annotated[str | None, typer.Option(help="A shipped persona pair (see `steerheal pairs`).")] = None,
    pos: Annotated[str | None, typer.Option(help="Positive persona (system prompt).")] = None,
    neg: Annotated[str | None, typer.Option(help="Negative persona (system prompt).")] = None,
    layers: Annotated[str, typer.Option(help="'mid', '14,15,16', '14-16' or '0.45-0.55'.")] = "mid",
    method: Annotated[str, typer.Option(help="mean_diff or pca.")] = "mean_diff",
    contexts: Annotated[Path | None, typer.Option(help="User messages (.jsonl with 'text', or .txt).")] = None,
    n_contexts: Annotated[int, typer.Option(help="Use the first N contexts (0 = all).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 16,
    gguf: Annotated[Path | None, typer.Option(help="Also export a GGUF control vector here.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Extract a contrastive persona vector (pos - neg) at the assistant tag."""
    from .models import load_model
    from .runs import ensure_writable_dir
    from .steering import extract

    ensure_writable_dir(out.parent)  # fail before minutes of work, not after
    if pair and (pos or neg):
        raise SteerhealError("both --pair and --pos/--neg given", "use one or the other")
    if pair:
        chosen = data.persona_pair(pair)
        pos, neg = chosen.pos, chosen.neg
    if pos is None or neg is None:
        raise SteerhealError("no persona given", "pass --pair NAME or both --pos TEXT and --neg TEXT")
    ctx = data.load_prompts(contexts) if contexts else data.contexts()
    ctx = ctx[:n_contexts] if n_contexts > 0 else ctx
    cfg = ExtractConfig(method=method, layers=layers, batch_size=batch_size)
    lm = load_model(model, device, dtype)
    vector = extract(lm, pos, neg, ctx, cfg, progress_desc="extract")
    vector.save(out)
    if gguf:
        vector.to_gguf(gguf)
    norms = ", ".join(f"{k}: {v:.2f}" for k, v in vector.norms.items())
    typer.echo(f"wrote {out} ({vector.method}, {vector.n_contexts} contexts, layer norms {norms})")


@vector_app.command("calibrate")
def vector_calibrate(
    model: ModelOpt,
    vector: Annotated[Path, typer.Option("--vector", "-v", help="Vector file from `vector extract`.")],
    target_kl: Annotated[float, typer.Option(help="p95 per-token KL target in nats.")] = 1.0,
    n_prompts: Annotated[int, typer.Option(help="Held-out prompts to roll out.")] = 16,
    n_tokens: Annotated[int, typer.Option(help="Greedy steered tokens per prompt.")] = 20,
    prompts: Annotated[Path | None, typer.Option(help="Calibration prompts file (default: shipped held-out).")] = None,
    write: Annotated[bool, typer.Option(help="Store the coefficient in the vector file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result (with trace) as JSON.")] = False,
    allow_other_model: Annotated[bool, typer.Option(help="Apply a vector from another model.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Find the coefficient whose steered rollouts reach the p95 KL target (iso-KL)."""
    from .dose import calibrate
    from .models import load_model
    from .steering import SteeringVector

    vec = SteeringVector.load(vector)
    cfg = CalibrateConfig(target_kl=target_kl, n_prompts=n_prompts, n_tokens=n_tokens)
    lm = load_model(model, device, dtype)
    result = calibrate(lm, vec, data.load_prompts(prompts) if prompts else data.heldout_prompts(), cfg,
                       desc=None if as_json else "calibrate", allow_other_model=allow_other_model)
    if write:
        vec.coeff, vec.calibrated_kl = result.coeff, target_kl
        vec.save(vector)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _echo_table(["eval", "coeff", "p95 KL", "mean", "p50", "max"],
                [[i + 1, f"{s.coeff:.4f}", f"{s.p95:.3f}", f"{s.mean:.3f}", f"{s.p50:.3f}", f"{s.max:.3f}"]
                 for i, s in enumerate(result.trace)])
    typer.echo(f"coefficient {result.coeff:.4f}: p95 KL {result.stats.p95:.3f} nats (target {target_kl}), "
               f"{result.n_evals} evaluations, converged={result.converged}")


@vector_app.command("export-gguf")
def vector_export_gguf(
    vector: Annotated[Path, typer.Argument(help="Vector file.")],
    out: Annotated[Path, typer.Argument(help="Output .gguf control vector.")],
    model_hint: Annotated[str, typer.Option(help="controlvector.model_hint (architecture name).")] = "llama",
) -> None:
    """Export a vector as a llama.cpp / repeng GGUF control vector."""
    from .steering import SteeringVector

    SteeringVector.load(vector).to_gguf(out, model_hint)
    typer.echo(f"wrote {out}")


@vector_app.command("info")
def vector_info(vector: Annotated[Path, typer.Argument(help="Vector file.")]) -> None:
    """Show a vector's metadata and per-layer norms."""
    from .steering import SteeringVector

    vec = SteeringVector.load(vector)
    meta = vec.metadata()
    meta["norms"] = vec.norms
    typer.echo(json.dumps(meta, indent=2))


@app.command("generate")
def generate_cmd(
    model: ModelOpt,
    prompt: Annotated[list[str] | None, typer.Option("--prompt", "-p", help="A user prompt (repeatable).")] = None,
    prompts: Annotated[Path | None, typer.Option(help="Prompts file (.jsonl with 'text', or .txt).")] = None,
    vector: Annotated[Path | None, typer.Option(help="Steer with this vector file.")] = None,
    coeff: Annotated[float | None, typer.Option(help="Steering coefficient (default: the calibrated one).")] = None,
    scope: Annotated[str, typer.Option(help="Token scope: all, prompt or generated.")] = "all",
    cosine_gated: Annotated[bool, typer.Option(help="Scale by max(0, cos(h, v)).")] = False,
    system: Annotated[str | None, typer.Option(help="System prompt (persona).")] = None,
    n: Annotated[int, typer.Option(help="Samples per prompt.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    greedy: Annotated[bool, typer.Option(help="Greedy decoding instead of sampling.")] = False,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: per device).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print records as JSON lines.")] = False,
    allow_other_model: Annotated[bool, typer.Option(help="Apply a vector from another model.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Generate completions, plain or steered, in batches."""
    from .generate import generate
    from .models import load_model
    from .steering import SteeringVector, SteerSpec

    texts = list(prompt or []) + (data.load_prompts(prompts) if prompts else [])
    if not texts:
        raise SteerhealError("no prompts given", "pass --prompt TEXT (repeatable) or --prompts FILE")
    specs = []
    if vector is not None:
        vec = SteeringVector.load(vector)
        c = coeff if coeff is not None else vec.coeff
        if c is None:
            raise SteerhealError(f"{vector} has no calibrated coefficient",
                                 "pass --coeff C or run `steerheal vector calibrate --write` first")
        specs.append(SteerSpec(vec, c, scope=scope, cosine_gated=cosine_gated))
    elif coeff is not None:
        raise SteerhealError("--coeff given without --vector", "pass --vector FILE too")
    cfg = GenerateConfig(max_new_tokens=max_new_tokens, do_sample=not greedy, temperature=temperature,
                         seed=seed, batch_size=batch_size)
    lm = load_model(model, device, dtype)
    records = generate(lm, texts, system=system, steer=specs, n=n, config=cfg,
                       desc=None if as_json else "generate", allow_other_model=allow_other_model)
    for r in records:
        if as_json:
            typer.echo(json.dumps(r.to_dict(), ensure_ascii=False))
        else:
            typer.echo(f"### {r.prompt}  [coeff {r.coeff:g}, sample {r.sample}]\n{r.completion}\n")


@eval_app.callback()
def eval_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSON file.")] = None,
    dataset: Annotated[str, typer.Option(help="own, tinymfv:<set> (e.g. tinymfv:classic) or hub:<config>.")] = "own",
    data_dir: Annotated[Path | None, typer.Option(help="tiny-mfv folder (or $STEERHEAL_TINYMFV_DIR).")] = None,
    protocol: Annotated[str, typer.Option(help="forced-choice or json-bool.")] = "forced-choice",
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter directory to apply.")] = None,
    vector: Annotated[Path | None, typer.Option(help="Steer with this vector file.")] = None,
    coeff: Annotated[float | None, typer.Option(help="Steering coefficient (default: the calibrated one).")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt (the prompt-only baseline).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N vignettes.")] = None,
    think: Annotated[int, typer.Option(help="Guided-think tokens before answering (0: none).")] = 0,
    orders: Annotated[str, typer.Option(help="forced-choice orders: fwd-rev or cyclic.")] = "fwd-rev",
    template: Annotated[Path | None, typer.Option(help="JSON file replacing prompt template fields.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 16,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print the first 3 prompts in full.")] = False,
    allow_other_model: Annotated[bool, typer.Option(help="Apply a vector from another model.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Evaluate a model (optionally adapted, steered or persona-prompted) on tiny-mfv vignettes."""
    if ctx.invoked_subcommand is not None:
        return
    from .config import EvalConfig
    from .evals import evaluate, load_dataset
    from .evals.report import format_summary
    from .models import attach_adapter, load_model
    from .runs import ensure_writable_dir, write_json
    from .steering import SteeringVector, SteerSpec

    if model is None or out is None:
        raise SteerhealError("eval needs --model and --out", "e.g. steerheal eval -m smollm2-135m -o base.json")
    ensure_writable_dir(out.parent)
    cfg = EvalConfig(protocol=protocol, orders=orders, think=think, batch_size=batch_size, system=system,
                     template=str(template) if template else None)
    items = load_dataset(dataset, data_dir, limit)
    lm = load_model(model, device, dtype)
    if adapter:
        attach_adapter(lm, adapter)
    specs, meta = [], {"adapter": str(adapter) if adapter else None, "system": system}
    if vector is not None:
        vec = SteeringVector.load(vector)
        c = coeff if coeff is not None else vec.coeff
        if c is None:
            raise SteerhealError(f"{vector} has no calibrated coefficient", "pass --coeff C")
        vec.check_compatible(lm, allow_other_model=allow_other_model)
        specs.append(SteerSpec(vec, c))
        meta.update(vector=str(vector), coeff=c)
    result = evaluate(lm, items, cfg, dataset=dataset, steer=specs, desc="eval", meta=meta)
    if verbose:
        for i, p in enumerate(result.prompts[:3]):
            typer.echo(f"--- prompt {i + 1} (as scored)\n{p}")
    typer.echo(format_summary(result.to_dict()))
    write_json(out, result.to_dict())
    typer.echo(f"wrote {out}")


@eval_app.command("compare")
def eval_compare(
    a: Annotated[Path, typer.Argument(help="Evaluation JSON of the reference model (A).")],
    b: Annotated[Path, typer.Argument(help="Evaluation JSON of the compared model (B).")],
    axis: Annotated[str | None, typer.Option(help="Foundation of interest, e.g. Authority or Care.")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (>= 1000).")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the comparison as JSON.")] = None,
) -> None:
    """Paired per-foundation deltas B - A with bootstrap 95% CIs over vignettes."""
    from .evals import compare, format_comparison
    from .runs import write_json

    if resamples < 1000:
        raise SteerhealError(f"--resamples {resamples} is too few for a 95% CI", "use at least 1000")
    docs = []
    for path in (a, b):
        try:
            docs.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SteerhealError(f"cannot read evaluation {path} ({exc})",
                                 "pass files written by `steerheal eval --out`") from exc
    result = compare(docs[0], docs[1], axis=axis, n_resamples=resamples, seed=seed)
    typer.echo(format_comparison(result))
    if out:
        write_json(out, result)


def _run_config(preset: str | None, config: Path | None, model: str | None, rounds: int | None):
    from .config import RunConfig
    from .loop import load_preset

    merged: dict = load_preset(preset) if preset else {}
    if config is not None:
        try:
            extra = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SteerhealError(f"cannot read config {config} ({exc})",
                                 "pass a JSON file of RunConfig fields") from exc
        for key, value in extra.items():  # nested sections merge key by key
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    if model:
        merged["model"] = model
    if rounds:
        merged["rounds"] = rounds
    return RunConfig.from_dict(merged, where=str(config or f"preset {preset}"))


@app.command("run")
def run_cmd(
    preset: Annotated[str | None, typer.Option(help="smoke (tiny model, seconds), demo (embedded model), "
                                               "reference (gemma-3-4b-it on a GPU).")] = "demo",
    config: Annotated[Path | None, typer.Option(help="JSON file of RunConfig fields (over the preset).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Override the model spec.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override the number of rounds.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last completed stage.")] = False,
) -> None:
    """The steer-heal loop: extract, dose, generate, filter, heal, evaluate, per round; then a report."""
    from .loop import SteerHealLoop

    cfg = _run_config(preset, config, model, rounds)
    summary = SteerHealLoop(cfg, out, resume=resume, log=typer.echo).run_all()
    rows = [["base", "-", f"{summary['base']['axis']['value']:.3f}", f"{summary['base']['pmass']:.3f}", "-"],
            ["prompt-only", "-", f"{summary['prompt_baseline']['axis']['value']:.3f}",
             f"{summary['prompt_baseline']['pmass']:.3f}", "-"]]
    for r in summary["rounds"]:
        rows.append([f"r{r['round'] + 1} steered", f"{r['coeff']:.3f}", f"{r['steered']['axis']['value']:.3f}",
                     f"{r['steered']['pmass']:.3f}", f"{r['kept']}/{r['total']}"])
        rows.append([f"r{r['round'] + 1} healed", "-", f"{r['healed']['axis']['value']:.3f}",
                     f"{r['healed']['pmass']:.3f}", "-"])
    typer.echo("")
    _echo_table(["model", "coeff", f"{summary['axis']} ({summary['protocol']})", "pmass", "kept"], rows)
    typer.echo(f"\nreport: {out / 'report.html'}  plot: {out / 'trajectory.png'}")


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Re-render trajectory.png and report.html from a run directory's files."""
    from .report import render

    if not (run_dir / "summary.json").exists():
        raise SteerhealError(f"{run_dir} has no summary.json", "finish the run first (steerheal run --resume)")
    typer.echo(f"wrote {render(run_dir)}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with healed rounds.")],
    out: Annotated[Path, typer.Argument(help="Output directory for the merged model.")],
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Merge every healed round's adapter into the base weights and save a plain HF model."""
    from .config import RunConfig
    from .loop import load_run_history
    from .models import load_model
    from .runs import ensure_writable_dir

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise SteerhealError(f"{run_dir} has no config.json", "pass a directory written by `steerheal run`")
    cfg = RunConfig.from_dict(json.loads(cfg_path.read_text()), where=str(cfg_path))
    ensure_writable_dir(out)
    lm = load_model(cfg.model, device, dtype or cfg.dtype, seed=cfg.seed)
    history = load_run_history(lm, run_dir)
    history.export_merged(out)
    typer.echo(f"merged {', '.join(history.names)} into {out} (load with AutoModelForCausalLM.from_pretrained)")


@app.command("heal")
def heal_cmd(
    model: ModelOpt,
    completions: Annotated[Path, typer.Option(help="JSONL of records with prompt/prompt_text, completion "
                                              "(and token_ids), e.g. rounds/r00/completions.jsonl.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the adapter.")],
    config: Annotated[Path | None, typer.Option(help="JSON file of HealConfig fields.")] = None,
    reg: Annotated[str | None, typer.Option(help="nll, kl_rev or kl_fwd.")] = None,
    agg: Annotated[str | None, typer.Option(help="mean, rmse, p95 or max.")] = None,
    tau: Annotated[float | None, typer.Option(help="Barrier threshold in nats.")] = None,
    lam: Annotated[float | None, typer.Option(help="Barrier weight.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Train one heal round (a fresh LoRA) on a completions file; saves the adapter in PEFT format."""
    from .chat import render_prompt
    from .config import HealConfig, from_dict
    from .heal.adapters import AdapterHistory
    from .heal.data import make_example
    from .heal.train import heal_round
    from .models import load_model
    from .runs import ensure_writable_dir, write_json

    values = json.loads(config.read_text()) if config else {}
    values.update({k: v for k, v in dict(reg=reg, agg=agg, tau=tau, lam=lam, epochs=epochs, lr=lr).items()
                   if v is not None})
    if "lora_band" in values:
        values["lora_band"] = tuple(values["lora_band"])
    cfg = from_dict(HealConfig, values, where=str(config or "options"))
    ensure_writable_dir(out)
    records = data.read_jsonl(completions) if completions.is_file() else None
    if not records:
        raise SteerhealError(f"completions file {completions} is missing or empty", "pass a non-empty JSONL file")
    lm = load_model(model, device, dtype)
    eos = lm.tokenizer.eos_token_id
    examples = []
    for n, r in enumerate(records, 1):
        if "completion" not in r or not ("prompt_text" in r or "prompt" in r):
            raise SteerhealError(f"{completions}:{n} needs 'completion' and 'prompt' (or 'prompt_text')",
                                 "use records written by `steerheal generate --json` or a run's completions.jsonl")
        text = r.get("prompt_text") or render_prompt(lm.tokenizer, r["prompt"], r.get("system"))
        examples.append(make_example(lm.tokenizer, text, r["completion"], r.get("token_ids") if r.get("prompt_text")
                                     else None, r.get("finished", True), cfg.max_len, eos))
    history = AdapterHistory(lm)
    result = heal_round(history, examples, cfg, rounds_baked=0, desc="heal")
    history.save(out)
    write_json(out / "heal.json", result.to_dict())
    last = result.steps[-1]
    typer.echo(f"trained {result.adapter} on {result.n_train} completions ({len(result.steps)} steps): "
               f"last nll {last['nll']:.3f}, D {last['D']:.3f}; val {result.val}")
    typer.echo(f"wrote {out}/{result.adapter} (PEFT adapter) and {out}/heal.json")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("runs/demo"),
    model: Annotated[str, typer.Option("--model", "-m", help="Model spec.")] = "smollm2-135m",
    pair: Annotated[str, typer.Option(help="Persona pair (see `steerheal pairs`).")] = "love-humanity",
    target_kl: Annotated[float, typer.Option(help="p95 KL target for the coefficient.")] = 1.0,
    n_contexts: Annotated[int, typer.Option(help="Contexts to extract over.")] = 128,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per completion.")] = 64,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Extract, calibrate, and compare steered with unsteered text (a quick steering demo)."""
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(model=model, pair=pair, target_kl=target_kl, n_contexts=n_contexts,
                     max_new_tokens=max_new_tokens, device=device, dtype=dtype)
    result = run_demo(cfg, out, log=typer.echo)
    for row in result.rows:
        typer.echo(f"\n=== {row['prompt']}\n--- unsteered\n{row['unsteered']}\n"
                   f"--- steered (coeff {result.coeff:.3f})\n{row['steered']}")
    typer.echo("")
    _echo_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in result.seconds.items()])
    typer.echo(f"\nwrote {result.out}/ (vector.safetensors, vector.gguf, calibration.json, completions.json)")


def main() -> None:
    try:
        app()
    except SteerhealError as exc:
        typer.echo(f"steerheal: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
