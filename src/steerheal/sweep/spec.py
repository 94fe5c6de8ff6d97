"""A sweep file: which runs to make, as a grid and/or a list over config keys.

    name = "agg-matched"          # the sweep directory's default name
    preset = "demo"               # every run starts from this preset ...
    seeds = [0, 1, 2]             # ... is repeated once per seed (optional) ...
    [base]                        # ... with these fields set for every run
    rounds = 1
    [grid]                        # every combination; dotted keys reach nested sections
    "heal.agg" = ["mean", "rmse"]
    [[runs]]                      # and these runs, one by one
    "heal.reg" = "nll"
    [resources]                   # per run (see Resources)
    num_cpus = 2

A weight-steering sweep sets `job = "weight-steer"`; its keys are WeightSteerRun fields
(`kind`, `train.*`, `compare.*`, ...; no preset), e.g. a grid over `kind` x `compare.alpha`.

A run is named after the keys it sets (`agg-mean_seed-0`), so its directory is stable across
re-submits and a finished one is found again. Every run's config is built and checked before
anything starts: one bad value fails the whole sweep with the run it belongs to.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..config import RunConfig, WeightSteerRun
from ..config.parse import _check, from_dict, merge_settings
from ..errors import SteerhealError

_TOP_KEYS = {"name", "description", "job", "preset", "seeds", "base", "grid", "runs", "resources"}
JOB_CONFIGS = {"loop": RunConfig, "weight-steer": WeightSteerRun}  # what one run of each job is
_SEED_KEY = {"loop": "seed", "weight-steer": "train.seed"}


@dataclass(frozen=True)
class Resources:
    """What one run asks Ray for; `num_gpus = "auto"` means 1 where the cluster has GPUs, else 0."""

    num_cpus: float = 2
    num_gpus: float | Literal["auto"] = "auto"
    retries: int = 1  # a failed run is tried again (resuming its run directory) this many times
    # loop: runs differing only in heal settings reuse round 0's pre-heal stages;
    # weight-steer: runs with equal training settings share one training directory
    share_stages: bool = True

    def __post_init__(self) -> None:
        _check(self.num_cpus > 0, f"resources.num_cpus must be > 0, got {self.num_cpus}", "use e.g. 2")
        _check(self.num_gpus == "auto" or (isinstance(self.num_gpus, (int, float)) and self.num_gpus >= 0),
               f"resources.num_gpus must be 'auto' or a number >= 0, got {self.num_gpus!r}", "use 'auto', 0 or 1")
        _check(0 <= self.retries <= 10, f"resources.retries must be in [0, 10], got {self.retries}", "use e.g. 1")


@dataclass(frozen=True)
class SweepRun:
    name: str
    overrides: dict[str, Any]  # the dotted keys this run sets beyond the preset and [base]
    config: RunConfig | WeightSteerRun

    def config_dict(self) -> dict:
        return asdict(self.config)


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    preset: str | None
    runs: list[SweepRun]
    resources: Resources = field(default_factory=Resources)
    job: str = "loop"

    @property
    def varied(self) -> list[str]:
        """Dotted keys that take more than one value across runs (the comparison's columns)."""
        keys = sorted({k for r in self.runs for k in r.overrides})
        return [k for k in keys if len({json.dumps(r.overrides.get(k)) for r in self.runs}) > 1]

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "job": self.job, "preset": self.preset,
                "resources": asdict(self.resources),
                "runs": [{"name": r.name, "overrides": r.overrides, "config": r.config_dict()} for r in self.runs]}


def shipped_sweeps() -> list[str]:
    folder = resources.files("steerheal").joinpath("data", "sweeps")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_sweep(source: str | Path) -> Sweep:
    """A sweep from a TOML file, or a shipped sweep by name (`agg-matched`, `smoke-2x2`)."""
    import tomllib

    path = Path(source)
    if not path.is_file():
        shipped = resources.files("steerheal").joinpath("data", "sweeps", f"{source}.toml")
        if not shipped.is_file():
            raise SteerhealError(f"sweep file {source} not found",
                                 f"pass a TOML file or a shipped sweep: {', '.join(shipped_sweeps())}")
        path = Path(str(shipped))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SteerhealError(f"sweep file {path} is not valid TOML ({exc})", "fix the TOML syntax") from exc
    return parse_sweep(raw, default_name=path.stem, where=str(path))


def parse_sweep(raw: dict, default_name: str = "sweep", where: str = "sweep") -> Sweep:
    from ..loop import load_preset

    unknown = set(raw) - _TOP_KEYS
    _check(not unknown, f"{where}: unknown key(s) {sorted(unknown)}", f"use only {sorted(_TOP_KEYS)}")
    job = raw.get("job", "loop")
    _check(job in JOB_CONFIGS, f"{where}: unknown job {job!r}", f"use one of {sorted(JOB_CONFIGS)}")
    _check(job == "loop" or "preset" not in raw, f"{where}: presets are steer-heal loop settings, not {job} ones",
           "remove `preset` and set the model and other fields in [base]")
    grid, listed = raw.get("grid", {}), raw.get("runs", [])
    _check(isinstance(grid, dict) and isinstance(listed, list) and all(isinstance(r, dict) for r in listed),
           f"{where}: [grid] must be a table and [[runs]] a list of tables",
           "see `steerheal sweep --help` for the file format")
    grid = _flatten(grid)  # heal.agg = [...] unquoted is a nested table in TOML: the same key
    for key, values in grid.items():
        _check(isinstance(values, list) and len(values) > 0, f"{where}: grid key {key!r} needs a non-empty list",
               f'write e.g. "{key}" = [a, b]')
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())] if grid else []
    points += [_flatten(r) for r in listed]
    points = points or [{}]
    seeds = raw.get("seeds")
    if seeds is not None:
        _check(isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds),
               f"{where}: seeds must be a non-empty list of integers, got {seeds!r}", "write e.g. seeds = [0, 1, 2]")
        points = [{**p, _SEED_KEY[job]: s} for p in points for s in seeds]
    preset = raw.get("preset")
    start = load_preset(preset) if preset else {}
    base = raw.get("base", {})
    _check(isinstance(base, dict), f"{where}: [base] must be a table",
           f"write [base] with {JOB_CONFIGS[job].__name__} fields")
    runs, seen = [], set()
    for point in points:
        name = run_name(point)
        _check(name not in seen, f"{where}: two runs are both named {name!r} (the same settings twice)",
               "remove the duplicate from [grid] or [[runs]]")
        seen.add(name)
        merged = merge_settings(merge_settings(start, _nest(_flatten(base))), _nest(point))
        try:
            runs.append(SweepRun(name, point, from_dict(JOB_CONFIGS[job], merged, where=f"{where} run {name}")))
        except SteerhealError as exc:  # range checks do not know the run: name it
            if f"run {name}" in exc.problem:
                raise
            raise SteerhealError(f"{where} run {name}: {exc.problem}", exc.fix) from exc
    res = raw.get("resources", {})
    _check(isinstance(res, dict), f"{where}: [resources] must be a table", "write [resources] num_cpus = 2")
    resources = from_dict(Resources, res, where=f"{where} resources")
    return Sweep(str(raw.get("name", default_name)), str(raw.get("description", "")), preset, runs, resources, job)


def _flatten(table: dict, prefix: str = "") -> dict:
    """{"heal": {"agg": [..]}} -> {"heal.agg": [..]}: dotted keys whether quoted or not."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_name(point: dict) -> str:
    """`{"heal.agg": "p95", "seed": 1}` -> `agg-p95_seed-1`: the last key part, the value, filesystem-safe."""
    if not point:
        return "run"
    parts = []
    for key, value in point.items():
        shown = "-".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.split('.')[-1]}-{shown}")
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "_".join(parts))


def _nest(flat: dict) -> dict:
    """Dotted keys to nested tables: {"heal.agg": "p95"} -> {"heal": {"agg": "p95"}}."""
    out: dict = {}
    for key, value in flat.items():
        *head, last = key.split(".")
        node = out
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return out

