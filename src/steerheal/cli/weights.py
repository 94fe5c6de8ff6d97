"""`steerheal weight-steer train | compare`: weight steering with contrastive adapter differences."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import DeviceOpt, DtypeOpt, ModelOpt, app

weights_app = typer.Typer(no_args_is_help=True, help="Weight steering: dW = delta(theta+) - delta(theta-), "
                          "calibrated at iso-KL and compared with activation steering and prompting.")
app.add_typer(weights_app, name="weight-steer")


@weights_app.command("train")
def train_cmd(
    model: ModelOpt = "smollm2-135m",
    pair: Annotated[str, typer.Option(help="Persona pair (see `steerheal pairs`).")] = "care-over-authority",
    adapter: Annotated[str, typer.Option(help="Comma-separated adapter types, or 'all': "
                                         "lora, dora, pissa, ia3, oft, delora.")] = "all",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for samples, dW files and records.")] = Path(
        "runs/weight-steer"),
    n_prompts: Annotated[int, typer.Option(help="Contexts sampled under each persona.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(help="Completion length.")] = 64,
    epochs: Annotated[int, typer.Option(help="Training epochs per adapter.")] = 2,
    lr: Annotated[float, typer.Option(help="Learning rate (times --lr-scale per type).")] = 5e-4,
    lr_scale: Annotated[list[str] | None, typer.Option(help="TYPE=FACTOR multiplies --lr for one adapter type "
                                                      "(repeatable; default ia3=10).")] = None,
    rank: Annotated[int, typer.Option(help="Adapter rank (LoRA, DoRA, PiSSA, DeLoRA).")] = 8,
    filter_samples: Annotated[bool, typer.Option("--filter/--no-filter",
                                                 help="Drop incoherent or narrating samples.")] = True,
    store_dtype: Annotated[str, typer.Option(help="float32 or bfloat16 for the dense parts of dW.")] = "float32",
    seed: Annotated[int, typer.Option(help="Sampling and training seed (the same for both sides).")] = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Sample under each persona, fine-tune theta+ and theta- per adapter type, save dW."""
    from ..config import WeightSteerConfig
    from ..errors import SteerhealError
    from ..weightsteer.pipeline import train_dir

    scales = dict(WeightSteerConfig().lr_scale)
    for item in lr_scale or []:
        kind, _, factor = item.partition("=")
        try:
            scales[kind.strip().lower()] = float(factor)
        except ValueError as err:
            raise SteerhealError(f"--lr-scale {item!r} is not TYPE=FACTOR", "write e.g. --lr-scale delora=0.1") from err
    cfg = WeightSteerConfig(n_prompts=n_prompts, max_new_tokens=max_new_tokens, epochs=epochs, lr=lr, rank=rank,
                            filter=filter_samples, store_dtype=store_dtype, seed=seed,
                            lr_scale=tuple(sorted(scales.items())))
    train_dir(model, pair, adapter, out, cfg, device=device, dtype=dtype, log=typer.echo)


@weights_app.command("compare")
def compare_cmd(
    directory: Annotated[Path, typer.Argument(help="A directory written by `weight-steer train`.")],
    dataset: Annotated[str, typer.Option(help="own, tinymfv:<set> (with --data-dir) or hub:<config>.")] = "own",
    data_dir: Annotated[str | None, typer.Option(help="Folder of tiny-mfv sets (or STEERHEAL_TINYMFV_DIR).")] = None,
    protocol: Annotated[str, typer.Option(help="json-bool or forced-choice.")] = "json-bool",
    target_kl: Annotated[float, typer.Option(help="iso-KL target (p95 token KL, nats) for every method; "
                                             "reached within 5%.")] = 1.0,
    adapter: Annotated[str | None, typer.Option(help="Only these adapter types (default: all trained).")] = None,
    signs: Annotated[str, typer.Option(help="both, pos or neg.")] = "both",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N vignettes.")] = None,
    claims: Annotated[str | None, typer.Option(help="JSONL of false claims for the Yes/No probe.")] = None,
    no_vector: Annotated[bool, typer.Option("--no-vector", help="Skip the activation-vector rows.")] = False,
    no_prompt: Annotated[bool, typer.Option("--no-prompt", help="Skip the prompt-baseline rows.")] = False,
    cal_prompts: Annotated[int, typer.Option(help="Held-out prompts per calibration evaluation.")] = 16,
    cal_tokens: Annotated[int, typer.Option(help="Greedy tokens per calibration rollout.")] = 20,
    out: Annotated[Path, typer.Option("--out", "-o", help="Result JSON (a .md table is written beside it).")] = Path(
        "runs/weight-steer/compare.json"),
) -> None:
    """Base, prompting, activation vector and each dW at matched KL on one table."""
    from ..config import CalibrateConfig, EvalConfig
    from ..errors import SteerhealError
    from ..weightsteer.kinds import parse_kinds
    from ..weightsteer.pipeline import CompareSettings, compare_dir

    sign_sets = {"both": (1, -1), "pos": (1,), "neg": (-1,)}
    if signs not in sign_sets:
        raise SteerhealError(f"unknown --signs {signs!r}", "use both, pos or neg")
    settings = CompareSettings(dataset=dataset, protocol=protocol, target_kl=target_kl, signs=sign_sets[signs],
                               vector=not no_vector, prompt=not no_prompt,
                               calibrate=CalibrateConfig(target_kl=target_kl, n_prompts=cal_prompts,
                                                         n_tokens=cal_tokens, tol=0.05 * target_kl),
                               eval=EvalConfig(protocol=protocol))
    compare_dir(directory, settings, out, data_dir=data_dir, limit=limit,
                kinds=parse_kinds(adapter) if adapter else None, claims_path=claims, log=typer.echo)
