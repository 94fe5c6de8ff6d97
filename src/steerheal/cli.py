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
    """Extract, calibrate, and compare steered with unsteered text (the main job for now)."""
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
