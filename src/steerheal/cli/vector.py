"""`steerheal vector ...`: extract, calibrate, export and inspect steering vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import data
from ..config import CalibrateConfig, ExtractConfig
from ..errors import SteerhealError
from . import DeviceOpt, DtypeOpt, ModelOpt, echo_table, vector_app


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
    from ..models import load_model
    from ..runs import ensure_writable_dir
    from ..steering import extract

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
    from ..dose import calibrate
    from ..models import load_model
    from ..steering import SteeringVector

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
    echo_table(["eval", "coeff", "p95 KL", "mean", "p50", "max"],
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
    from ..steering import SteeringVector

    SteeringVector.load(vector).to_gguf(out, model_hint)
    typer.echo(f"wrote {out}")


@vector_app.command("info")
def vector_info(vector: Annotated[Path, typer.Argument(help="Vector file.")]) -> None:
    """Show a vector's metadata and per-layer norms."""
    from ..steering import SteeringVector

    vec = SteeringVector.load(vector)
    meta = vec.metadata()
    meta["norms"] = vec.norms
    typer.echo(json.dumps(meta, indent=2))
