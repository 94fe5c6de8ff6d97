"""Crash safety and determinism of `steerheal run` (real subprocesses, real SIGKILL).

A smoke run is killed by the fault hook (`steerheal.faults`) during generation, during heal,
between writing an artefact and renaming it into place, and half-way through an event line;
each time it is resumed with `--resume`. After every kill no artefact may be corrupt and no
completed round may change; the final summary must equal an uninterrupted run's.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

VOLATILE = {"time", "seconds"}  # wall-clock fields: the only ones allowed to differ between runs


def run_cli(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEERHEAL_NO_PROGRESS": "1"}
    env.pop("STEERHEAL_FAULT", None)
    if fault:
        env["STEERHEAL_FAULT"] = fault
    cmd = [sys.executable, "-c", "from steerheal.cli import main; main()", "run", "--preset", "smoke",
           "--out", str(out), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def check_integrity(out: Path) -> None:
    """Every visible artefact parses; events.jsonl may only lack a newline-terminated tail."""
    for path in out.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl" and path.name != "events.jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118
    lines = (out / "events.jsonl").read_text().split("\n")
    for line in lines[:-1]:
        json.loads(line)  # complete lines are valid; only the unterminated last piece may be torn


def finished_rounds(out: Path) -> dict[int, str]:
    done = [e["round"] for e in events_tolerant(out) if e["stage"] == "record"]
    return {r: (out / "rounds" / f"r{r:02d}" / "round.json").read_text() for r in done}


def events_tolerant(out: Path) -> list[dict]:
    complete = (out / "events.jsonl").read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = run_cli(out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_same_seed_twice_gives_identical_events_and_metrics(reference, tmp_path):
    proc = run_cli(tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert strip_volatile(events(tmp_path / "run")) == strip_volatile(events(reference))
    for name in ("summary.json", "base_eval.json", "rounds/r01/heal.json", "rounds/r01/dose.json"):
        a = json.loads((tmp_path / "run" / name).read_text())
        assert strip_volatile(a) == strip_volatile(json.loads((reference / name).read_text())), name
    assert (tmp_path / "run/rounds/r00/completions.jsonl").read_text() == \
        (reference / "rounds/r00/completions.jsonl").read_text()


# Each fault is the n-th arrival at a point in the resumed process (see steerheal.faults).
KILLS = ["generate:2",  # round 0 sampling (walk-C probes, then the round's batch)
         "heal_step:1",  # inside round 0's heal
         "write:2",  # an artefact complete in its temp file, not yet renamed
         "event:3",  # half an event line on disk
         "heal_step:2"]  # round 1's heal, after round 0 is recorded


def test_sigkill_at_any_point_then_resume_matches_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    for i, fault in enumerate(KILLS):
        before = finished_rounds(out) if (out / "events.jsonl").exists() else {}
        proc = run_cli(out, *(["--resume"] if i else []), fault=fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
        check_integrity(out)
        after = finished_rounds(out)
        assert {r: after[r] for r in before} == before, f"a completed round changed under {fault}"
    proc = run_cli(out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in out.rglob(".*.tmp")], "stale temp files survived the resume"
    check_integrity(out)
    assert json.loads((out / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())
    stages = [e["stage"] for e in events(out)]
    assert stages.count("baseline") == 1 and stages.count("record") == 2 and stages[-1] == "done"
