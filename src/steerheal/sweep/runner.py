"""Execute a sweep on Ray: one task per run, retried once, finished runs skipped on re-submit.

Layout of a sweep directory (every path a Ray worker writes must be reachable by it: on a
cluster, put the sweep directory on storage every node mounts):

    sweep.json           the expanded sweep: every run's name, overrides and full config
    state.json           per run: attempts (status, wall seconds, error), rewritten after each
    runs/<name>/         a normal `steerheal run` directory (report.html, summary.json, ...)
    results.json, results.csv, results.md, sweep.png   the comparison (see results.py)

A task never raises: it returns a status dict, so a user error inside a run (zero kept
completions, say) is reported with its message instead of a pickled traceback. A failed run is
submitted again with resume, so its second attempt continues from its last completed stage.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SteerhealError
from ..runs import ensure_writable_dir, write_json
from .jobs import check_data, check_same_config, is_finished, job_for
from .spec import Sweep, SweepRun

__all__ = ["SweepState", "check_same_config", "execute", "is_finished", "run_one"]


def run_one(job: str, payload: dict, run_dir: str, num_threads: int) -> dict:
    """The body of one Ray task: one run of `job` in `run_dir`, resuming whatever is there."""
    start = time.time()
    try:
        import torch

        torch.set_num_threads(max(1, num_threads))
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "log.txt", "a", encoding="utf-8") as log:
            def say(msg: str) -> None:
                log.write(msg + "\n")
                log.flush()

            _TASKS[job](payload, path, say)
        return {"status": "done", "wall_s": time.time() - start}
    except SteerhealError as exc:
        return {"status": "failed", "wall_s": time.time() - start, "error": str(exc)}
    except Exception as exc:  # a bug: keep the traceback in the state file
        return {"status": "failed", "wall_s": time.time() - start,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def _loop_task(payload: dict, path: Path, log: Callable[[str], None]) -> None:
    from ..config import RunConfig
    from ..loop import SteerHealLoop

    SteerHealLoop(RunConfig.from_dict(payload["config"]), path, resume=True, log=log).run_all()


def _weight_steer_task(payload: dict, path: Path, log: Callable[[str], None]) -> None:
    from ..config import WeightSteerRun, from_dict
    from ..weightsteer.pipeline import run_job

    write_json(path / "config.json", payload["config"])  # what the run directory holds (checked on re-submit)
    run_job(from_dict(WeightSteerRun, payload["config"]), payload["train_dir"], path, payload["train_kinds"],
            log=log)


_TASKS = {"loop": _loop_task, "weight-steer": _weight_steer_task}


@dataclass
class SweepState:
    """Attempts per run, persisted to state.json after every change."""

    path: Path
    attempts: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SweepState:
        data = json.loads(path.read_text()) if path.is_file() else {}
        return cls(path, data.get("attempts", {}))

    def add(self, name: str, result: dict) -> None:
        self.attempts.setdefault(name, []).append(result)
        write_json(self.path, {"attempts": self.attempts})

    def wall_s(self, name: str) -> float:
        return sum(a.get("wall_s", 0.0) for a in self.attempts.get(name, []))


def gpus_per_run(resources, cluster_gpus: float) -> float:
    if resources.num_gpus == "auto":
        return 1.0 if cluster_gpus >= 1 else 0.0
    return float(resources.num_gpus)


def execute(sweep: Sweep, out: Path, *, address: str | None = None, log: Callable[[str], None] = print) -> SweepState:
    """Run every unfinished run of `sweep` under `out` on Ray (local unless `address`/RAY_ADDRESS)."""
    import ray

    out = Path(out).resolve()
    for run in sweep.runs:  # fail before writing anything if a directory holds another config ...
        check_same_config(run, out / "runs" / run.name)
    job = job_for(sweep, out)
    check_data(job)  # ... or an evaluation set is missing
    ensure_writable_dir(out / "runs")
    write_json(out / "sweep.json", sweep.to_dict())
    state = SweepState.load(out / "state.json")
    todo = [r for r in sweep.runs if not job.is_finished(r)]
    log(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} already finished, "
        f"{len(todo)} to run")
    if not todo:
        return state
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, address or os.environ.get("RAY_ADDRESS"), sweep.resources)
    try:
        cluster = ray.cluster_resources()
        gpus = gpus_per_run(sweep.resources, cluster.get("GPU", 0))
        if cluster.get("CPU", 0) < sweep.resources.num_cpus or cluster.get("GPU", 0) < gpus:
            raise SteerhealError(f"each run asks for {sweep.resources.num_cpus:g} CPUs and {gpus:g} GPUs; the Ray "
                                 f"cluster has {cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs",
                                 "lower [resources] num_cpus / num_gpus in the sweep file, or add nodes")
        # A GPU worker is used once: a reused process keeps its CUDA context and cached memory on
        # the GPU it first saw. CPU workers are reused (torch stays imported).
        task = ray.remote(num_cpus=sweep.resources.num_cpus, num_gpus=gpus, max_retries=0,
                          max_calls=1 if gpus else 0)(run_one)
        finished = [r for r in sweep.runs if r not in todo]
        _schedule(job, todo, finished, task, state, ray, log)
    finally:
        if started_here:  # a session the caller opened stays open
            ray.shutdown()
    return state


def _init_ray(ray, address: str | None, resources) -> None:
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    # Workers get steerheal's own variables explicitly: a cluster's workers do not inherit ours.
    passed = {k: v for k, v in os.environ.items() if k.startswith("STEERHEAL_")}
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", **passed}}
    if address:
        ray.init(address=address, runtime_env=env, **common)
    else:  # "local": always a fresh Ray on this machine, never one a `ray start` left running
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        ray.init(address="local", num_cpus=max(usable, math.ceil(resources.num_cpus)), runtime_env=env, **common)


def _lost(exc: Exception) -> str:
    """One line for an exception from ray.get: a lost worker, or the task's own error."""
    from ray import exceptions as rex

    lost = tuple(getattr(rex, n) for n in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError",
                                          "TaskCancelledError") if hasattr(rex, n))
    if isinstance(exc, lost):
        return f"worker lost: {type(exc).__name__}"
    cause = getattr(exc, "cause", None) or exc
    lines = [x for x in str(cause).splitlines() if x.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def _schedule(job, todo: list[SweepRun], finished: list[SweepRun], task, state: SweepState, ray, log) -> None:
    """Leaders (one per group of runs sharing work) start first; the rest of a group starts as
    soon as its leader has done the shared part. Where that work is exclusive (weight steering's
    members would train into one directory), a leader that ends without it (it failed after its
    retries) hands the lead to the next member; loop members then compute their own stages.

    A member that already has started (a re-submit), and every member of a group with a finished
    run, starts at once.
    """
    resources = job.sweep.resources
    done_by_key = {job.group(r): r for r in finished}
    tries = {r.name: 0 for r in todo}
    pending: dict = {}
    waiting: dict[str, tuple[SweepRun, list[SweepRun]]] = {}  # leader name -> (leader, members held back)
    threads = max(1, math.ceil(resources.num_cpus))

    def submit(run: SweepRun) -> None:
        tries[run.name] += 1
        pending[task.remote(job.name, job.payload(run), str(job.runs_dir / run.name), threads)] = (run, time.time())
        log(f"  start {run.name} (attempt {tries[run.name]})")

    def release(leader_name: str, *, ended: bool = False) -> None:
        leader, members = waiting.pop(leader_name, (None, []))
        if ended and members and job.exclusive and not job.ready(leader):  # no shared part: next one leads
            submit(members[0])
            if members[1:]:
                waiting[members[0].name] = (members[0], members[1:])
            return
        for member in members:
            shared = job.seed(leader, member)
            if shared:
                log(f"  {member.name}: {shared}")
            submit(member)

    groups: dict[str, list[SweepRun]] = {}
    for run in todo:
        groups.setdefault(run.name if job.started(run) else job.group(run), []).append(run)
    for key, members in groups.items():
        if key in done_by_key:  # a finished run holds the shared work (unless the group grew: then one leads)
            waiting[done_by_key[key].name] = (done_by_key[key], members)
            release(done_by_key[key].name, ended=True)
        else:
            submit(members[0])
            if members[1:]:
                waiting[members[0].name] = (members[0], members[1:])
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
        for name in [n for n, (leader, _) in waiting.items() if job.ready(leader)]:
            release(name)  # the leader has done the shared part: its group can start
        if not ready:
            continue
        run, submitted = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as exc:  # the worker died (killed, out of memory, node lost): the retry resumes
            result = {"status": "failed", "wall_s": time.time() - submitted, "error": _lost(exc)}
        state.add(run.name, {**result, "attempt": tries[run.name]})
        if result["status"] == "done":
            log(f"  done  {run.name} in {result['wall_s']:.0f} s")
        else:
            log(f"  FAILED {run.name} (attempt {tries[run.name]}): {result['error']}")
            if tries[run.name] <= resources.retries:
                submit(run)
                continue
        release(run.name, ended=True)  # ended without sharing (else released above): the next member leads
