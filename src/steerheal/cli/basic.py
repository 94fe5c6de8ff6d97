"""`steerheal models | pairs | generate | demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import data
from ..config import GenerateConfig
from ..errors import SteerhealError
from . import DeviceOpt, DtypeOpt, ModelOpt, app, echo_table


@app.command()
def models() -> None:
    """List the embedded and tiny model specs and whether each is ready locally."""
    from ..models import list_specs

    echo_table(["spec", "kind", "cached", "description"],
                [[r["spec"], r["kind"], "yes" if r["cached"] else "no", r["description"]] for r in list_specs()])


@app.command()
def pairs() -> None:
    """List the shipped persona pairs."""
    echo_table(["name", "target", "axis"],
                [[p.name, p.target_foundation or "-", p.axis] for p in data.persona_pairs().values()])



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
    from ..generate import generate
    from ..models import load_model
    from ..steering import SteeringVector, SteerSpec

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
    """Extract, calibrate, and compare steered with unsteered text (a quick steering demo)."""
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(model=model, pair=pair, target_kl=target_kl, n_contexts=n_contexts,
                     max_new_tokens=max_new_tokens, device=device, dtype=dtype)
    result = run_demo(cfg, out, log=typer.echo)
    for row in result.rows:
        typer.echo(f"\n=== {row['prompt']}\n--- unsteered\n{row['unsteered']}\n"
                   f"--- steered (coeff {result.coeff:.3f})\n{row['steered']}")
    typer.echo("")
    echo_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in result.seconds.items()])
    typer.echo(f"\nwrote {result.out}/ (vector.safetensors, vector.gguf, calibration.json, completions.json)")
