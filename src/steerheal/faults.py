"""Fault injection for the crash-safety and bad-input tests (off unless the variable is set).

`STEERHEAL_FAULT=point[:n]` makes the n-th arrival (default 1st) at `point` kill the process
with SIGKILL, as an out-of-memory killer or a pulled plug would: no `finally`, no atexit.
Points: `generate` (after a sampling batch), `heal_step` (after an optimiser step), `write`
(an artefact fully written to its temp file, before the rename), `event` (half an event line
written). `STEERHEAL_FAULT=nan_loss` instead turns the heal loss into NaN.
`STEERHEAL_FAULT_ONCE=PATH` makes the fault fire in one process only, across processes: the
first to fire creates PATH, and no process fires while PATH exists (a sweep's retry test).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _spec() -> tuple[str, int] | None:
    raw = os.environ.get("STEERHEAL_FAULT", "")
    if not raw:
        return None
    point, _, n = raw.partition(":")
    return point, int(n or 1)


def active(point: str) -> bool:
    """True when the fault named `point` is requested (for faults that are not kills)."""
    spec = _spec()
    return spec is not None and spec[0] == point


def fires(point: str) -> bool:
    """Count an arrival at `point`; True when it is the requested one."""
    spec = _spec()
    if spec is None or spec[0] != point:
        return False
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != spec[1]:
        return False
    once = os.environ.get("STEERHEAL_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))  # atomic: exactly one process wins
        except FileExistsError:
            return False
    return True


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point: str) -> None:
    """Kill the process here if this is the requested arrival at `point`."""
    if fires(point):
        kill()
