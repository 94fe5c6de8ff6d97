"""Moral-foundations vignettes: load tiny-mfv (directory or Hub) or the project's own set.

A vignette has a third-person text (`other_violate`: "You see someone ...") and, where the
set has one, a first-person rewrite (`self_violate`), joined on `id`, plus the human label
distribution over the seven foundations. Two file schemas exist (see the tiny-mfv README):
A (`human_<F>` percentages as numbers) and B (airisk: `Care` ... `Liberty`, `Not Wrong` as
strings like "83 %"). Both become one `Vignette` type here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..data import read_jsonl
from ..errors import SteerhealError

FOUNDATIONS = ("Care", "Fairness", "Loyalty", "Authority", "Sanctity", "Liberty", "Social Norms")
CONDITIONS = ("other_violate", "self_violate")
DATA_DIR_ENV = "STEERHEAL_TINYMFV_DIR"
HUB_ID = "wassname/tiny-mfv"
_SCHEMA_A_KEYS = {f: f"human_{f.replace(' ', '')}" for f in FOUNDATIONS}
_SCHEMA_B_KEYS = {**{f: f for f in FOUNDATIONS[:-1]}, "Social Norms": "Not Wrong"}


@dataclass(frozen=True)
class Vignette:
    id: str
    foundation: str  # coarse label, one of FOUNDATIONS
    fine: str
    wrong: float  # mean human wrongness rating, 0-4
    texts: dict[str, str]  # condition -> text
    human: dict[str, float] = field(default_factory=dict)  # foundation -> percent of raters

    @property
    def majority(self) -> str:
        """The foundation most human raters chose (falls back to the coarse label)."""
        if not self.human:
            return self.foundation
        return max(FOUNDATIONS, key=lambda f: (self.human.get(f, 0.0), f == self.foundation))


def _percent(value, where: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).replace("%", "").strip())
    except ValueError as exc:
        raise SteerhealError(f"{where}: cannot read percentage {value!r}", "use a number like 83 or '83 %'") from exc


def _parse_row(row: dict, where: str) -> tuple[str, str, str, float, str, dict[str, float]]:
    missing = [k for k in ("id", "foundation_coarse", "text") if k not in row]
    if missing:
        raise SteerhealError(f"{where}: missing field(s) {missing}",
                             "each row needs id, foundation_coarse and text (see the tiny-mfv README)")
    coarse = str(row["foundation_coarse"]).strip()
    if coarse not in FOUNDATIONS:
        raise SteerhealError(f"{where}: unknown foundation {coarse!r}", f"use one of {list(FOUNDATIONS)}")
    keys = _SCHEMA_A_KEYS if any(k in row for k in _SCHEMA_A_KEYS.values()) else _SCHEMA_B_KEYS
    human = {f: _percent(row[k], f"{where} field {k}") for f, k in keys.items() if k in row}
    return (str(row["id"]), coarse, str(row.get("foundation", coarse)), float(row.get("wrong", float("nan"))),
            str(row["text"]), human)


def _read_condition(path: Path) -> dict[str, tuple]:
    rows = read_jsonl(path)
    if not rows:
        raise SteerhealError(f"vignette file {path} is empty", "point at a file with at least one vignette")
    parsed: dict[str, tuple] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise SteerhealError(f"{path}:{n} is not a JSON object", "one vignette object per line")
        item = _parse_row(row, f"{path}:{n}")
        if item[0] in parsed:
            warnings.warn(f"{path}:{n}: duplicate id {item[0]} (label {item[1]}); keeping the first "
                          f"(label {parsed[item[0]][1]})", stacklevel=2)
            continue
        parsed[item[0]] = item
    return parsed


def load_dir(directory: str | os.PathLike, set_name: str) -> list[Vignette]:
    """Vignettes of one set from a tiny-mfv style directory, conditions joined on id."""
    directory = Path(directory)
    files = {c: directory / f"vignettes_{set_name}_{c}.jsonl" for c in CONDITIONS}
    if not files["other_violate"].is_file():
        available = sorted({p.name.split("_")[1] for p in directory.glob("vignettes_*_other_violate.jsonl")})
        raise SteerhealError(f"no vignette set {set_name!r} in {directory} (found: {available or 'none'})",
                             f"pass --data-dir pointing at a tiny-mfv folder, or set {DATA_DIR_ENV}")
    other = _read_condition(files["other_violate"])
    self_rows = _read_condition(files["self_violate"]) if files["self_violate"].is_file() else {}
    out = []
    for vid, (_, coarse, fine, wrong, text, human) in other.items():
        texts = {"other_violate": text}
        if vid in self_rows:
            texts["self_violate"] = self_rows[vid][4]
        out.append(Vignette(vid, coarse, fine, wrong, texts, human))
    return out


def load_own() -> list[Vignette]:
    """The project's own vignette set (shipped; written for this project)."""
    root = resources.files(__package__.rsplit(".", 1)[0]).joinpath("data", "vignettes")
    with resources.as_file(root) as path:
        return load_dir(path, "own")


def load_hub(config: str = "classic", split: str = "train", hub_id: str = HUB_ID) -> list[Vignette]:
    """Load from the Hugging Face Hub with `datasets` (needs network and `pip install datasets`).

    Each Hub config is one set; its rows carry the other-violate text (and a self-violate
    text where the card's schema has one), parsed exactly like the local files.
    """
    try:
        import datasets
    except ImportError as exc:
        raise SteerhealError("loading from the Hub needs the `datasets` package",
                             "pip install datasets, or use --data-dir with local files") from exc
    try:
        rows = list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as exc:  # network, missing config, ...
        raise SteerhealError(f"cannot load {hub_id} config {config!r} split {split!r} ({exc})",
                             "check network access, or download the files and use --data-dir") from exc
    return vignettes_from_rows(rows, f"{hub_id}:{config}/{split}")


def vignettes_from_rows(rows: list[dict], where: str) -> list[Vignette]:
    """Rows carrying `text` (other) and optionally `self_text`/`self_violate` (self)."""
    out, seen = [], set()
    for n, row in enumerate(rows, 1):
        vid, coarse, fine, wrong, text, human = _parse_row(row, f"{where} row {n}")
        if vid in seen:
            warnings.warn(f"{where} row {n}: duplicate id {vid}; keeping the first", stacklevel=2)
            continue
        seen.add(vid)
        texts = {"other_violate": text}
        for key in ("self_violate", "self_text"):
            if row.get(key):
                texts["self_violate"] = str(row[key])
        out.append(Vignette(vid, coarse, fine, wrong, texts, human))
    if not out:
        raise SteerhealError(f"{where} has no rows", "choose a non-empty config/split")
    return out


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[Vignette]:
    """`own`, `tinymfv:<set>` (from --data-dir or $STEERHEAL_TINYMFV_DIR) or `hub:<config>[/<split>]`."""
    if name == "own":
        items = load_own()
    elif name.startswith("tinymfv:"):
        directory = data_dir or os.environ.get(DATA_DIR_ENV)
        if not directory:
            raise SteerhealError(f"dataset {name} needs the tiny-mfv directory",
                                 f"pass --data-dir DIR or set {DATA_DIR_ENV}")
        items = load_dir(directory, name.split(":", 1)[1])
    elif name.startswith("hub:"):
        config, _, split = name.split(":", 1)[1].partition("/")
        items = load_hub(config or "classic", split or "train")
    else:
        raise SteerhealError(f"unknown dataset {name!r}", "use own, tinymfv:<set> or hub:<config>[/<split>]")
    return items[:limit] if limit else items
