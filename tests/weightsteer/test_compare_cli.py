"""End to end on the tiny model: `weight-steer train` then `weight-steer compare` through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from steerheal.cli import app
from steerheal.config import CompareSettings, from_dict
from steerheal.weightsteer import WeightDelta
from steerheal.weightsteer.pipeline import compare_dir

runner = CliRunner()
TINY = ["--model", "tiny-random-llama", "--dtype", "float32", "--device", "cpu"]
TARGET = 0.01  # the random tiny model has little KL to give


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws")
    r = runner.invoke(app, ["weight-steer", "train", *TINY, "--adapter", "lora,ia3", "--out", str(out),
                            "--n-prompts", "6", "--max-new-tokens", "12", "--epochs", "1", "--lr", "5e-3",
                            "--no-filter"])
    assert r.exit_code == 0, r.output
    return out


def compare_args(trained, out):
    return ["weight-steer", "compare", str(trained), "--dataset", "own", "--limit", "14", "--target-kl", str(TARGET),
            "--cal-prompts", "4", "--cal-tokens", "6", "--out", str(out)]


def test_train_writes_one_dW_per_type_with_a_record(trained):
    record = json.loads((trained / "train.json").read_text())
    assert set(record) == {"lora", "ia3"}
    for kind in record:
        assert (trained / f"{kind}.safetensors").stat().st_size == record[kind]["dW_bytes"]
        assert [s["side"] for s in record[kind]["sides"]] == ["pos", "neg"]
    sampling = json.loads((trained / "config.json").read_text())["sampling"]
    assert sampling["do_sample"] is True and sampling["max_new_tokens"] == 12 and sampling["temperature"] > 0
    rows = [json.loads(line) for line in (trained / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["side"] for r in rows}) == ["neg", "pos"] and len(rows) == 12


def test_compare_prints_one_matched_kl_table_and_resumes(trained, tmp_path):
    out = tmp_path / "cmp.json"
    r = runner.invoke(app, compare_args(trained, out))
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    labels = [row["label"] for row in result["rows"]]
    assert labels == ["base", "prompt +", "prompt -", "vector +", "vector -", "ws:lora +", "ws:lora -",
                      "ws:ia3 +", "ws:ia3 -"]
    for row in result["rows"]:
        if row["method"] in ("vector", "ws:lora", "ws:ia3"):
            assert abs(row["kl_p95"] - TARGET) <= 0.05 * TARGET + 1e-9, row  # matched KL
            assert (row["coeff"] > 0) == (row["sign"] > 0)
        if row["method"] != "base":
            assert row["axis_delta"]["name"] == "Care" and row["yes_no_delta"]["lo"] <= row["yes_no_delta"]["hi"]
    assert "ws:ia3 -" in r.output and "Care(axis)" in r.output
    assert "| ws:lora + |" in out.with_suffix(".md").read_text()
    again = runner.invoke(app, compare_args(trained, out))  # every row comes from the cache
    assert again.exit_code == 0 and json.loads(out.read_text())["rows"] == result["rows"]
    assert ": coeff" in r.output and ": coeff" not in again.output  # rows are logged when computed
    WeightDelta.load(trained / "lora.safetensors").scaled(2.0).save(trained / "lora.safetensors")  # "retrained"
    third = runner.invoke(app, compare_args(trained, out))
    assert third.exit_code == 0, third.output
    recomputed = {line.rsplit(": coeff", 1)[0] for line in third.output.splitlines() if ": coeff" in line}
    assert recomputed == {"ws:lora +", "ws:lora -"}  # only the changed dW's rows
    rows = {row["label"]: row for row in json.loads(out.read_text())["rows"]}
    old = {row["label"]: row for row in result["rows"]}
    assert rows["ws:lora +"]["coeff"] == pytest.approx(old["ws:lora +"]["coeff"] / 2, rel=0.1)


def test_compare_refuses_a_directory_without_training(tmp_path):
    r = runner.invoke(app, ["weight-steer", "compare", str(tmp_path), "--out", str(tmp_path / "c.json")])
    assert r.exit_code != 0 and "not a weight-steering directory" in str(r.exception)


def test_compare_names_untrained_adapter_types(trained, tmp_path):
    r = runner.invoke(app, [*compare_args(trained, tmp_path / "c.json"), "--adapter", "oft"])
    assert r.exit_code != 0 and "no trained dW for ['oft']" in str(r.exception)


def test_train_refuses_to_mix_settings_in_one_directory(trained):
    r = runner.invoke(app, ["weight-steer", "train", *TINY, "--adapter", "lora", "--out", str(trained),
                            "--n-prompts", "7", "--no-filter"])
    assert r.exit_code != 0 and "other settings" in str(r.exception)


def test_rows_are_cached_by_what_they_use(trained, tmp_path):
    """A fixed alpha reuses the base, prompt and vector rows; fewer vignettes recompute every row."""
    out = tmp_path / "cmp.json"
    assert runner.invoke(app, [*compare_args(trained, out), "--adapter", "ia3"]).exit_code == 0
    settings = json.loads(out.read_text())["settings"]  # what the CLI ran, as a config file would give it
    fixed = from_dict(CompareSettings, {**settings, "alpha": 2.0})
    lines = []
    summary = compare_dir(trained, fixed, out, limit=14, kinds=["ia3"], log=lines.append)
    computed = {line.rsplit(": coeff", 1)[0] for line in lines if ": coeff" in line}
    assert computed == {"ws:ia3 +", "ws:ia3 -"}  # only the dW rows depend on alpha
    rows = {r["label"]: r for r in summary["rows"]}
    assert rows["ws:ia3 +"]["coeff"] == 2.0 and rows["ws:ia3 -"]["coeff"] == -2.0
    assert rows["ws:ia3 +"]["converged"] is None and rows["ws:ia3 +"]["kl_p95"] > 0  # measured, not matched
    lines.clear()
    compare_dir(trained, fixed, out, limit=10, kinds=["ia3"], log=lines.append)
    assert sum(": coeff" in line for line in lines) == 7  # other vignettes: no row is reused
