import json
from pathlib import Path

import pytest

from steerheal.errors import SteerhealError
from steerheal.evals.vignettes import FOUNDATIONS, load_dataset, load_dir, load_own, vignettes_from_rows

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinymfv"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"tiny-mfv reference data not found at {SHARED}")


def test_own_set_has_at_least_eight_per_foundation_with_both_conditions():
    items = load_own()
    for f in FOUNDATIONS:
        sub = [v for v in items if v.foundation == f]
        assert len(sub) >= 8, f
        assert all(set(v.texts) == {"other_violate", "self_violate"} for v in sub)
        assert all(v.majority == f for v in sub)
        assert all(abs(sum(v.human.values()) - 100) <= 1 for v in sub)


@needs_shared
def test_classic_set_loads_and_joins_both_conditions():
    items = load_dir(SHARED, "classic")
    assert len(items) == 132
    assert all(set(v.texts) == {"other_violate", "self_violate"} for v in items)
    assert {v.foundation for v in items} == set(FOUNDATIONS)
    assert all(v.texts["other_violate"].startswith("You see") for v in items)


@needs_shared
def test_airisk_schema_b_parses_and_keeps_the_first_duplicate_with_a_warning():
    with pytest.warns(UserWarning, match="duplicate id"):
        items = load_dir(SHARED, "airisk")
    assert len(items) == 131 and len({v.id for v in items}) == 131
    assert all(v.human and "Social Norms" in v.human for v in items)


@needs_shared
def test_hub_style_rows_parse_like_local_files():
    rows = [json.loads(line) for line in (SHARED / "vignettes_scifi_other_violate.jsonl").read_text().splitlines()]
    items = vignettes_from_rows(rows, "hub:scifi")
    assert len(items) == 132 and items[0].id == rows[0]["id"]


def write(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_files_give_errors_naming_the_file_and_row(tmp_path):
    good = {"id": "a", "foundation_coarse": "Care", "text": "You see x."}
    write(tmp_path / "vignettes_bad_other_violate.jsonl", [good, {"id": "b", "text": "no label"}])
    with pytest.raises(SteerhealError, match=r"other_violate.jsonl:2: missing field"):
        load_dir(tmp_path, "bad")
    write(tmp_path / "vignettes_lab_other_violate.jsonl", [{**good, "foundation_coarse": "Purity"}])
    with pytest.raises(SteerhealError, match="unknown foundation 'Purity'"):
        load_dir(tmp_path, "lab")
    (tmp_path / "vignettes_empty_other_violate.jsonl").write_text("")
    with pytest.raises(SteerhealError, match="is empty"):
        load_dir(tmp_path, "empty")
    (tmp_path / "vignettes_junk_other_violate.jsonl").write_text("{not json\n")
    with pytest.raises(SteerhealError, match="junk_other_violate.jsonl:1 is not valid JSON"):
        load_dir(tmp_path, "junk")
    with pytest.raises(SteerhealError, match="no vignette set 'nope'"):
        load_dir(tmp_path, "nope")


def test_tinymfv_dataset_needs_a_directory(monkeypatch):
    monkeypatch.delenv("STEERHEAL_TINYMFV_DIR", raising=False)
    with pytest.raises(SteerhealError, match="needs the tiny-mfv directory"):
        load_dataset("tinymfv:classic")
    with pytest.raises(SteerhealError, match="unknown dataset"):
        load_dataset("classic")
    assert len(load_dataset("own", limit=5)) == 5
