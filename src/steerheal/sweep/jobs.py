"""What a sweep runs, per job kind: the steer-heal loop (`job = "loop"`, the default) or weight
steering (`job = "weight-steer"`: train theta+/theta- for one adapter type, compare at matched KL).

A job tells the scheduler five things about a run: its Ray task arguments, whether it is
finished, which evaluation set it reads (checked before anything runs), which group it belongs
to (runs of a group share work: the loop's round-0 stages, or weight steering's training) and
when the group's leader has done the shared part. It also turns a finished run into result
rows for the comparison table.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..errors import SteerhealError
from ..runs import read_events
from .share import prefix_key, seed_from_leader, shareable_events
from .spec import Sweep, SweepRun, run_name


def check_same_config(run: SweepRun, run_dir: Path) -> None:
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        return
    stored = json.loads(cfg_path.read_text())
    expected = json.loads(json.dumps(run.config_dict()))
    stored.pop("rounds", None), expected.pop("rounds", None)  # more rounds extend a run, as --resume does
    if stored != expected:
        changed = sorted(k for k in expected.keys() | stored.keys() if stored.get(k) != expected.get(k))
        raise SteerhealError(f"run directory {run_dir} holds a different config for run {run.name!r} "
                             f"(differs in {changed})",
                             "write the changed sweep to a new --out, or delete that run directory to redo it")


def is_finished(run: SweepRun, run_dir: Path) -> bool:
    """A loop run is finished when its config matches, its last event is `done` and its summary
    has every planned round (or it stopped early)."""
    cfg_path, events = run_dir / "config.json", run_dir / "events.jsonl"
    if not (cfg_path.is_file() and (run_dir / "summary.json").is_file() and events.is_file()):
        return False
    check_same_config(run, run_dir)
    events = read_events(events)  # a torn last line is dropped: a run killed while appending is not done
    if not events or events[-1].get("stage") != "done":
        return False
    summary = json.loads((run_dir / "summary.json").read_text())
    return len(summary["rounds"]) >= run.config.rounds or bool(summary["stopped_early"])  # more rounds: extend


class LoopJob:
    """Steer-heal runs; runs differing only in heal settings share round 0's pre-heal stages."""

    name = "loop"
    seed_key = "seed"
    exclusive = False  # members of a group whose leader failed can all compute their own stages at once

    def __init__(self, sweep: Sweep, out: Path):
        self.sweep, self.out, self.runs_dir = sweep, Path(out), Path(out) / "runs"

    def payload(self, run: SweepRun) -> dict:
        return {"config": run.config_dict()}

    def is_finished(self, run: SweepRun) -> bool:
        return is_finished(run, self.runs_dir / run.name)

    def started(self, run: SweepRun) -> bool:
        return (self.runs_dir / run.name / "events.jsonl").exists()

    def group(self, run: SweepRun) -> str:
        return prefix_key(run.config) if self.sweep.resources.share_stages else run.name

    def ready(self, leader: SweepRun) -> bool:
        return bool(shareable_events(self.runs_dir / leader.name))

    def seed(self, leader: SweepRun, member: SweepRun) -> str | None:
        if seed_from_leader(self.runs_dir / leader.name, self.runs_dir / member.name):
            return f"round-0 pre-heal stages shared from {leader.name}"
        return None

    def dataset(self, run: SweepRun) -> tuple[str, str | None]:
        return run.config.eval_dataset, run.config.eval_data_dir

    def rows(self, run: SweepRun, base: dict) -> list[dict]:
        summary_path = self.runs_dir / run.name / "summary.json"
        row = {**base, "rounds_planned": run.config.rounds}
        if not summary_path.is_file():
            return [{**row, "rounds_done": 0}]
        summary = json.loads(summary_path.read_text())
        base_pmass = summary["base"]["pmass"]
        last = summary["rounds"][-1] if summary["rounds"] else None
        row.update(axis=summary["axis"], rounds_done=len(summary["rounds"]),
                   stopped_early=bool(summary["stopped_early"]), base_pmass=base_pmass)
        if last:
            delta = last["healed_vs_base"]["axis"] or {}
            row.update(delta=delta.get("delta"), delta_lo=delta.get("lo"), delta_hi=delta.get("hi"),
                       steered=last["steered"]["axis"]["value"], healed_pmass=last["healed"]["pmass"],
                       pmass_ratio=last["healed"]["pmass"] / base_pmass if base_pmass else None,
                       kept=last["kept"], total=last["total"])
        return [row]


_NOT_TRAINING = ("kind", "compare", "data_dir", "limit", "claims")  # run settings training does not read


class WeightSteerJob:
    """Weight-steering runs; runs with equal training settings share one training directory
    (`train/<name>/`) in which their leader trains every adapter type the group needs."""

    name = "weight-steer"
    seed_key = "train.seed"
    exclusive = True  # one run at a time may train into a group's directory

    def __init__(self, sweep: Sweep, out: Path):
        self.sweep, self.out, self.runs_dir = sweep, Path(out), Path(out) / "runs"
        self.kinds: dict[str, list[str]] = {}
        self.names: dict[str, str] = {}  # group -> training directory name, from the group's first run
        for run in sweep.runs:
            group = self.group(run)
            self.kinds.setdefault(group, [])
            if run.config.kind not in self.kinds[group]:
                self.kinds[group].append(run.config.kind)
            self.names.setdefault(group, training_name(run))
        if len(set(self.names.values())) < len(self.names):  # two trainings never share a directory
            raise SteerhealError("two different trainings of this sweep would share one train/ directory name",
                                 "make the training keys of the sweep differ in more than punctuation")

    def train_dir(self, run: SweepRun) -> Path:
        if not self.sweep.resources.share_stages:
            return self.runs_dir / run.name / "train"
        return self.out / "train" / self.names[self.group(run)]

    def payload(self, run: SweepRun) -> dict:
        return {"config": run.config_dict(), "train_dir": str(self.train_dir(run)),
                "train_kinds": self.kinds[self.group(run)] if self.sweep.resources.share_stages else None}

    def is_finished(self, run: SweepRun) -> bool:
        run_dir = self.runs_dir / run.name
        if not (run_dir / "config.json").is_file():
            return False
        check_same_config(run, run_dir)
        return (run_dir / "compare.json").is_file()  # written last, atomically

    def started(self, run: SweepRun) -> bool:
        return False  # a member waits for the training; on a re-submit that is found done at once

    def group(self, run: SweepRun) -> str:
        if not self.sweep.resources.share_stages:
            return run.name
        cfg = asdict(run.config)
        return json.dumps({k: v for k, v in cfg.items() if k not in _NOT_TRAINING}, sort_keys=True, default=str)

    def ready(self, leader: SweepRun) -> bool:
        """The leader has trained every adapter type of its group and finished its comparison, so
        the rows the group shares (base, prompting, vector) are cached for the members."""
        path = self.train_dir(leader) / "train.json"
        if not (path.is_file() and (self.runs_dir / leader.name / "compare.json").is_file()):
            return False
        record = json.loads(path.read_text())
        return all(k in record for k in self.kinds[self.group(leader)])

    def seed(self, leader: SweepRun, member: SweepRun) -> str | None:
        return f"uses the dW trained by {leader.name}"  # members are only released once the leader is ready

    def dataset(self, run: SweepRun) -> tuple[str, str | None]:
        return run.config.compare.dataset, run.config.data_dir

    def rows(self, run: SweepRun, base: dict) -> list[dict]:
        """One row per sign: the dW at its (calibrated or fixed) alpha against the base model."""
        result = self._comparison(run)
        if result is None:
            return [base]
        out = [{**base, **_method_row(e, result["base_pmass"]), "axis": result["axis"]}
               for e in result["rows"] if e["method"] == f"ws:{run.config.kind}"]
        return out or [base]

    def references(self, run: SweepRun) -> list[dict]:
        """The prompting and activation-vector rows of this run's comparison (same vignettes, same target)."""
        result = self._comparison(run)
        if result is None:
            return []
        return [{"label": e["label"], "training": self.train_dir(run).name,
                 "target_kl": result["settings"]["target_kl"], **_method_row(e, result["base_pmass"])}
                for e in result["rows"] if e["method"] in ("prompt", "vector")]

    def _comparison(self, run: SweepRun) -> dict | None:
        path = self.runs_dir / run.name / "compare.json"
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        return {**result, "base_pmass": next(r["pmass"] for r in result["rows"] if r["method"] == "base")}


def _method_row(entry: dict, base_pmass: float | None) -> dict:
    delta = entry.get("axis_delta") or {}
    return {"sign": "+" if entry["sign"] > 0 else "-", "alpha": entry["coeff"], "kl_p95": entry["kl_p95"],
            "converged": entry["converged"], "delta": delta.get("delta"), "delta_lo": delta.get("lo"),
            "delta_hi": delta.get("hi"), "pmass": entry["pmass"],
            "pmass_ratio": entry["pmass"] / base_pmass if base_pmass and entry["pmass"] is not None else None}


def training_name(run: SweepRun) -> str:
    """`train/<name>`: the run's overrides that training reads (`default` when it sets none)."""
    used = {k: v for k, v in run.overrides.items() if k.split(".")[0] not in _NOT_TRAINING}
    return run_name(used) if used else "default"


JOBS = {"loop": LoopJob, "weight-steer": WeightSteerJob}


def job_for(sweep: Sweep, out: Path) -> LoopJob | WeightSteerJob:
    return JOBS[sweep.job](sweep, out)


def check_data(job) -> None:
    """Every run's evaluation set loads now, not after an hour of training (a missing tiny-mfv folder)."""
    from ..evals.vignettes import load_dataset

    for name, data_dir in dict.fromkeys(job.dataset(r) for r in job.sweep.runs):
        if not name.startswith("hub:"):  # the hub is fetched by the run itself
            load_dataset(name, data_dir, limit=1)
