"""`steerheal sweep SWEEP`: many steer-heal (or weight-steering) runs from one TOML file, on Ray,
compared in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import SteerhealError
from . import app, echo_table


@app.command("sweep")
def sweep_cmd(
    sweep: Annotated[str, typer.Argument(help="A sweep TOML file, or a shipped sweep: agg-matched, "
                                         "agg-matched-tau0.05, smoke-2x2, ws-kind-alpha, ws-smoke.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Sweep directory (default runs/sweeps/NAME). "
                                             "Re-submitting skips finished runs.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local "
                                                "Ray on this machine).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and their settings; run nothing.")] =
        False,
    collect_only: Annotated[bool, typer.Option("--collect-only", help="Rebuild the table and plot from the run "
                                               "directories; run nothing.")] = False,
) -> None:
    """Expand the sweep (grid x list x seeds), run each unfinished run as a Ray task, then compare.

    The file: `preset`, optional `seeds = [..]`, `[base]` (RunConfig fields for every run),
    `[grid]` ("heal.agg" = ["mean", "rmse"]: every combination), `[[runs]]` (extra runs one by
    one), `[resources]` (num_cpus, num_gpus = "auto", retries, share_stages). With
    `job = "weight-steer"` the keys are WeightSteerRun fields (kind, train.*, compare.*; no
    preset), e.g. a grid over kind x "compare.alpha". Writes results.md/.csv/.json and
    sweep.png to the sweep directory.
    """
    from ..sweep import collect, execute, load_sweep

    spec = load_sweep(sweep)
    out = out or Path("runs/sweeps") / spec.name
    if dry_run:
        echo_table(["run", *spec.varied], [[r.name, *(str(r.overrides.get(k, "-")) for k in spec.varied)]
                                           for r in spec.runs])
        typer.echo(f"{len(spec.runs)} runs -> {out}/runs/")
        return
    if not collect_only:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise SteerhealError("Ray is not installed", "pip install 'steerheal[sweep]' (or `make install`)") from exc
        execute(spec, out, address=address, log=typer.echo)
    elif not (out / "runs").is_dir():
        raise SteerhealError(f"{out} holds no sweep runs", "run the sweep first, or pass its --out")
    from ..sweep.results import table_rows

    results = collect(spec, out)
    typer.echo("")
    echo_table(*table_rows(results))
    failed = [r["run"] for r in results["runs"] if r["status"] == "failed"]
    typer.echo(f"\nresults: {out / 'results.md'}  plot: {out / 'sweep.png'}")
    if failed:
        raise SteerhealError(f"{len(failed)} of {len(results['runs'])} runs failed after retries: {', '.join(failed)}",
                             f"read their errors in {out / 'results.md'}, fix, and re-submit (finished runs are "
                             "skipped)")
