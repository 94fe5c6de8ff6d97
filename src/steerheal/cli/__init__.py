"""The command-line face: parse arguments, call one library function per command.

`app` and the shared option types live here; each group of commands has its own module
(`vector`, `eval`, `loop`, `basic`, `sweep`, ...), imported at the bottom so they register on `app`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import SteerhealError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Steer language models, then heal the steering into weights.")
vector_app = typer.Typer(no_args_is_help=True, help="Build, calibrate and export steering vectors.")
app.add_typer(vector_app, name="vector")
eval_app = typer.Typer(invoke_without_command=True, help="Evaluate on moral-foundations vignettes (tiny-mfv); "
                       "`eval compare A.json B.json` for paired deltas with CIs.")
app.add_typer(eval_app, name="eval")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model spec: embedded name, tiny-random-*, "
                                       "local dir, .gguf file or hub id.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, mps, or auto (spread a model too big for "
                                               "one GPU over all GPUs; default: best available).")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 (default: bf16 where supported).")]


def echo_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    typer.echo("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    typer.echo("  ".join("-" * w for w in widths))
    for r in rows:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def main() -> None:
    """The console entry point: every user error is one line `steerheal: error: ... Fix: ...`, exit 2."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click
    from typer.exceptions import Abort

    try:
        code = app(standalone_mode=False)
    except SteerhealError as exc:
        typer.echo(f"steerheal: error: {exc}", err=True)
        sys.exit(2)
    except NoArgsIsHelpError as exc:  # a bare group: show its help, as click would
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:  # unknown option, bad value type, missing argument
        where = exc.ctx.command_path if exc.ctx else "steerheal"
        message = " ".join(exc.format_message().split()).rstrip(".")
        typer.echo(f"steerheal: error: {message}. Fix: see `{where} --help`.", err=True)
        sys.exit(2)
    except ClickException as exc:
        typer.echo(f"steerheal: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except Abort:
        typer.echo("steerheal: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


from . import basic, discover, eval, loop, probes, sweep, vector, weights  # noqa: E402,F401  (register the commands)
