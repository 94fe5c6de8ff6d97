"""Atomic file writes: a reader never sees a half-written artefact.

Each writer goes to a temporary file in the destination directory, is flushed to disk
(fsync) and moved into place with `os.replace`, which is atomic on POSIX and Windows
filesystems; the directory entry is synced too. A killed writer leaves at most a hidden
`.name.*.tmp` file, which `RunDir` removes when it reopens the run. Directories (PEFT
adapter folders) are written the same way with `atomic_dir`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import faults
from .errors import SteerhealError

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents) or fail with a clear message."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise SteerhealError(
            f"cannot write to directory {path} ({exc.strerror or exc})",
            "choose a writable output path",
        ) from exc
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it over `path` only if the block succeeds."""
    path = Path(path)
    ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual mode
        _fsync(tmp_path)
        faults.reached("write")
        os.replace(tmp_path, path)
        _fsync(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    import shutil

    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        old = path.parent / f".{path.name}.old.tmp"
        if path.exists():
            os.replace(path, old)  # two renames: a directory cannot be replaced while non-empty
        faults.reached("write")
        os.replace(tmp, path)
        _fsync(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete temp files/dirs left by killed writers under `root`; restore an interrupted dir swap."""
    import shutil

    removed = []
    for p in sorted(root.rglob(".*.tmp"), key=lambda q: len(q.parts), reverse=True):
        if p.name.endswith(".old.tmp"):
            target = p.parent / p.name[1:-len(".old.tmp")]
            if not target.exists():  # killed between the two renames: the old copy is the valid one
                os.replace(p, target)
                continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_events(path: Path) -> list[dict]:
    """The events of an `events.jsonl` (none if it is missing), without touching the directory."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a kill: ignore it and everything after
    return out


class RunDir:
    """A run directory: config.json, append-only events.jsonl, rounds/rNN/..., summary, report.

    Every stage writes its artefacts atomically, then appends one typed event; a stage counts as
    done only when its event exists, so a run killed mid-stage redoes that stage on resume.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = ensure_writable_dir(Path(path))
        self.events_path = self.path / "events.jsonl"
        remove_stale_temps(self.path)
        self._repair_events()

    def _repair_events(self) -> None:
        """Cut a torn last line (a kill mid-append) so the next event starts on its own line."""
        if not self.events_path.exists():
            return
        raw = self.events_path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            with open(self.events_path, "r+b") as fh:
                fh.truncate(raw.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())

    def round_dir(self, r: int) -> Path:
        d = self.path / "rounds" / f"r{r:02d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def events(self) -> list[dict]:
        return read_events(self.events_path)

    def done(self, stage: str, round_: int | None = None) -> dict | None:
        for ev in reversed(self.events()):
            if ev.get("stage") == stage and ev.get("round") == round_:
                return ev
        return None

    def log(self, stage: str, round_: int | None = None, **fields: Any) -> dict:
        import time

        event = {"stage": stage, "round": round_, "time": time.time(), **fields}
        line = json.dumps(event, default=str, ensure_ascii=False)
        with open(self.events_path, "a", encoding="utf-8") as fh:
            if faults.fires("event"):  # crash test: die with half the line on disk
                fh.write(line[: len(line) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                faults.kill()
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return event
