"""`steerheal eval` and `steerheal eval compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SteerhealError
from . import DeviceOpt, DtypeOpt, eval_app


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
    from ..config import EvalConfig
    from ..evals import evaluate, load_dataset
    from ..evals.report import format_summary
    from ..models import attach_adapter, load_model
    from ..runs import ensure_writable_dir, write_json
    from ..steering import SteeringVector, SteerSpec

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
    from ..evals import compare, format_comparison
    from ..runs import write_json

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
