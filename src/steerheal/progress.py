"""Progress bars for long work: tqdm on stderr, silent when `desc` is None or not a TTY-run."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterable[T]:
    """Wrap `items` in a progress bar when `desc` is given (and STEERHEAL_NO_PROGRESS is unset)."""
    if desc is None or os.environ.get("STEERHEAL_NO_PROGRESS"):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
