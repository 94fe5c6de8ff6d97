"""`steerheal run | report | export | heal`: the steer-heal loop and its artefacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import data
from ..errors import SteerhealError
from . import DeviceOpt, DtypeOpt, ModelOpt, app, echo_table


def read_config_file(path: Path) -> dict:
    """A JSON or TOML file of RunConfig fields (by extension; TOML tables are nested sections)."""
    import tomllib

    toml = Path(path).suffix.lower() == ".toml"
    try:
        text = Path(path).read_text(encoding="utf-8")
        extra = tomllib.loads(text) if toml else json.loads(text)
    except OSError as exc:
        raise SteerhealError(f"cannot read config {path} ({exc.strerror or exc})", "pass an existing file") from exc
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if toml else "JSON"
        raise SteerhealError(f"config {path} is not valid {kind} ({exc})",
                             f"fix the {kind} syntax (a .toml file is read as TOML, anything else as JSON)") from exc
    if not isinstance(extra, dict):
        raise SteerhealError(f"config {path} is not a table of settings", "write an object of RunConfig fields")
    return extra


def _run_config(preset: str | None, config: Path | None, model: str | None, rounds: int | None):
    from ..config import RunConfig
    from ..config.parse import merge_settings
    from ..loop import load_preset

    merged: dict = load_preset(preset) if preset else {}
    if config is not None:
        merged = merge_settings(merged, read_config_file(config))  # nested sections merge key by key
    if model:
        merged["model"] = model
    if rounds is not None:
        merged["rounds"] = rounds
    return RunConfig.from_dict(merged, where=str(config or f"preset {preset}"))


@app.command("run")
def run_cmd(
    preset: Annotated[str | None, typer.Option(help="smoke (tiny model, seconds), demo (embedded model), "
                                               "reference (gemma-3-4b-it on a GPU).")] = "demo",
    config: Annotated[Path | None, typer.Option(help="JSON or TOML file of RunConfig fields (over the "
                                                "preset).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Override the model spec.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override the number of rounds.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last completed stage.")] = False,
) -> None:
    """The steer-heal loop: extract, dose, generate, filter, heal, evaluate, per round; then a report."""
    from ..loop import SteerHealLoop

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
    echo_table(["model", "coeff", f"{summary['axis']} ({summary['protocol']})", "pmass", "kept"], rows)
    typer.echo(f"\nreport: {out / 'report.html'}  plot: {out / 'trajectory.png'}")


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Re-render trajectory.png and report.html from a run directory's files."""
    from ..report import render

    if not (run_dir / "summary.json").exists():
        raise SteerhealError(f"{run_dir} has no summary.json", "finish the run first (steerheal run --resume)")
    typer.echo(f"wrote {render(run_dir)}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with healed rounds.")],
    out: Annotated[Path, typer.Argument(help="Output directory.")],
    fmt: Annotated[str, typer.Option("--format", help="merged: one HF model directory (plain transformers, "
                                     "vLLM); peft: the adapter stack, one PEFT folder per round + history.json; "
                                     "both: OUT/merged and OUT/adapters.")] = "merged",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Export the healed student: merged into the base weights, and/or as its stack of PEFT adapters."""
    from ..config import RunConfig
    from ..loop import load_run_history
    from ..models import load_model
    from ..runs import atomic_dir, ensure_writable_dir

    if fmt not in ("merged", "peft", "both"):
        raise SteerhealError(f"unknown export format {fmt!r}", "use merged, peft or both")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise SteerhealError(f"{run_dir} has no config.json", "pass a directory written by `steerheal run`")
    cfg = RunConfig.from_dict(json.loads(cfg_path.read_text()), where=str(cfg_path))
    ensure_writable_dir(out)
    lm = load_model(cfg.model, device, dtype or cfg.dtype, seed=cfg.seed)
    history = load_run_history(lm, run_dir)
    names = ", ".join(history.names)
    if fmt in ("peft", "both"):
        target = out / "adapters" if fmt == "both" else out
        with atomic_dir(target) as tmp:
            history.save(tmp)
        typer.echo(f"wrote the adapter stack {names} to {target} (PeftModel.from_pretrained(base, "
                   f"'{target}/r00', adapter_name='r00'), then load_adapter for the others)")
    if fmt in ("merged", "both"):
        target = out / "merged" if fmt == "both" else out
        history.export_merged(target, in_place=True)  # last use of the history: no second weight copy
        typer.echo(f"merged {names} into {target} (load with AutoModelForCausalLM.from_pretrained)")


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
    from ..chat import render_prompt
    from ..config import HealConfig, from_dict
    from ..heal.adapters import AdapterHistory
    from ..heal.data import make_example
    from ..heal.train import heal_round
    from ..models import load_model
    from ..runs import ensure_writable_dir, write_json

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
