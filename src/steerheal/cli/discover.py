"""`steerheal discover search | score`: unsupervised discovery of steerable directions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import DeviceOpt, DtypeOpt, ModelOpt, app

discover_app = typer.Typer(no_args_is_help=True, help="Find steerable directions without labels (divergence "
                           "adapters or MELBO), then score their linearity and dose-response.")
app.add_typer(discover_app, name="discover")


@discover_app.command("search")
def search_cmd(
    model: ModelOpt = "smollm2-135m",
    method: Annotated[str, typer.Option(help="divergence (low-rank write, -KL + NLL) or melbo.")] = "divergence",
    n: Annotated[int, typer.Option(help="Independent searches (divergence) or orthogonal vectors (melbo).")] = 4,
    out: Annotated[Path, typer.Option("--out", "-o", help="New directory for the search.")] = Path(
        "runs/discover"),
    steps: Annotated[int, typer.Option(help="Optimiser steps per search (divergence) or per vector (melbo).")] = 24,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 3e-3 divergence, 0.05 x radius melbo).")] =
        None,
    rank: Annotated[int, typer.Option(help="divergence: rank of each block's write.")] = 2,
    kl_stop: Annotated[float | None, typer.Option(help="divergence: stop a search once its mean token KL to base "
                                                  "reaches this many nats (default 1.0; 0: no budget).")] = None,
    shared: Annotated[bool, typer.Option(help="divergence: one write shared by every block.")] = False,
    source: Annotated[int | None, typer.Option(help="melbo: source block (default n/4).")] = None,
    target: Annotated[int | None, typer.Option(help="melbo: target block (default 3n/4).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; search i uses seed + 1000 i.")] = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Train N searches and save each found direction as a SteeringVector."""
    from ..config import DiscoverConfig
    from ..discover.pipeline import search
    from ..models import load_model

    extra = {"lr": lr} if lr is not None and method == "divergence" else {"melbo_lr": lr} if lr is not None else {}
    if kl_stop is not None:
        extra["kl_stop"] = kl_stop or None  # 0: no budget, every step runs
    steps_key = "steps" if method == "divergence" else "melbo_steps"
    cfg = DiscoverConfig(method=method, n=n, rank=rank, shared=shared, source=source, target=target, seed=seed,
                         **{steps_key: steps}, **extra)
    lm = load_model(model, device, dtype)
    record = search(lm, cfg, out, log=typer.echo)
    typer.echo(f"wrote {len(record['searches'])} directions to {out}/directions (search.json beside them)")


@discover_app.command("score")
def score_cmd(
    directory: Annotated[Path, typer.Argument(help="A directory written by `discover search`.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Defaults to the model the search ran on; "
                                              "another model is an error.")] = None,
    n_eval: Annotated[int, typer.Option(help="Held-out prompts.")] = 32,
    groups: Annotated[int, typer.Option(help="Prompt groups (one deviation description each).")] = 4,
    new_tokens: Annotated[int, typer.Option(help="Tokens per completion.")] = 48,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint for written descriptions "
                                                  "(default: the local embedding judge).")] = None,
    judge_key: Annotated[str | None, typer.Option(help="API key (or STEERHEAL_JUDGE_KEY).")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name at the endpoint.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Linearity (with random and shuffled nulls), dose-response, catalogue.json and catalogue.html."""
    from ..config import ScoreConfig
    from ..discover.pipeline import load_search, score_dir, summary_table
    from ..models import load_model

    cfg = ScoreConfig(n_eval=n_eval, groups=groups, new_tokens=new_tokens)
    record = load_search(directory)
    lm = load_model(model or record["model"], device, dtype)
    catalogue = score_dir(lm, directory, cfg, judge_url, judge_key, judge_model, log=typer.echo)
    typer.echo(summary_table(catalogue))
    typer.echo(f"wrote {directory}/catalogue.json and catalogue.html")
