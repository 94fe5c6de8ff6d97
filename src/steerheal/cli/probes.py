"""`steerheal resist` and `steerheal introspect run`: the two model-probing experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import DeviceOpt, DtypeOpt, ModelOpt, app

introspect_app = typer.Typer(no_args_is_help=True, help="Gradient awareness: inject a correction gradient and "
                             "ask the model what it is being corrected on.")
app.add_typer(introspect_app, name="introspect")


def _floats(text: str, what: str) -> tuple[float, ...]:
    from ..errors import SteerhealError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise SteerhealError(f"{what} {text!r} is not a comma-separated list of numbers",
                             "write e.g. -1,0.5,1,2") from err


@app.command("resist")
def resist_cmd(
    model: ModelOpt = "smollm2-135m",
    facts: Annotated[Path | None, typer.Option(help="JSONL of facts (id, true, false, questions); "
                                               "default: the shipped 48.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for sweeps, summary, table and plot.")] = Path(
        "runs/resist"),
    limit: Annotated[int | None, typer.Option(help="Only the first N facts.")] = None,
    layers: Annotated[str, typer.Option(help="Layers of each fact vector: 'mid', 'all' or e.g. '10,12'.")] = "mid",
    target_kl: Annotated[float, typer.Option(help="p95 token KL (nats) of one iso-KL unit.")] = 1.0,
    multipliers: Annotated[str, typer.Option(help="Signed multiples of the unit coefficient to sweep.")] =
        "-2,-1,-0.5,0.5,1,1.5,2,3,4",
    n_control: Annotated[int, typer.Option(help="Other facts used as the capability check.")] = 16,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Steer each fact towards its false answer at iso-KL multiples; report KL_flip, KL_break and their window."""
    from ..config import ResistConfig
    from ..models import load_model
    from ..resistance import load_facts, run_resist

    cfg = ResistConfig(layers=layers, target_kl=target_kl, multipliers=_floats(multipliers, "--multipliers"),
                       n_control=n_control, limit=limit)
    fact_list = load_facts(facts)
    lm = load_model(model, device, dtype)
    result = run_resist(lm, fact_list, cfg, out, facts_source=str(facts) if facts else "shipped", log=typer.echo)
    typer.echo(result["table"])
    typer.echo(f"wrote {out}/summary.json, facts.json, table.md, resist.png")


@introspect_app.command("run")
def introspect_run_cmd(
    model: ModelOpt = "smollm2-135m",
    mode: Annotated[str, typer.Option(help="raw (norm-matched to the residual), virtual (h - eta*g at iso-KL) "
                                      "or projector (a trained map, scored on held-out topics).")] = "raw",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for summary.json, trials.json, table.md.")] = Path(
        "runs/introspect"),
    layer: Annotated[int | None, typer.Option(help="Block whose output gradient is taken and injected "
                                              "(default: the middle one).")] = None,
    topics: Annotated[Path | None, typer.Option(help="Topic set JSON (default: the shipped 8 topics).")] = None,
    raw_scale: Annotated[float, typer.Option(help="raw: injected norm / residual norm.")] = 1.0,
    target_kl: Annotated[float, typer.Option(help="virtual: p95 KL (nats) that sets eta.")] = 1.0,
    projector: Annotated[str, typer.Option(help="projector: linear or mlp.")] = "linear",
    steps: Annotated[int, typer.Option(help="projector: training steps per fold.")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of the random control and the projector.")] = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Inject correction gradients into unrelated prompts; table of identification accuracy vs chance and controls."""
    from ..config import IntrospectConfig
    from ..introspect import load_topics, run_introspect
    from ..models import load_model

    cfg = IntrospectConfig(mode=mode, layer=layer, raw_scale=raw_scale, target_kl=target_kl, projector=projector,
                           projector_steps=steps, seed=seed)
    ts = load_topics(topics)
    lm = load_model(model, device, dtype)
    result = run_introspect(lm, ts, cfg, out, log=typer.echo)
    typer.echo(result["table"])
    typer.echo(f"wrote {out}/summary.json, trials.json, table.md")
