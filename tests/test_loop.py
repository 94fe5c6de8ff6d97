import json

import pytest

from steerheal import loop as loop_mod
from steerheal.config import RunConfig
from steerheal.errors import SteerhealError
from steerheal.loop import SteerHealLoop, load_preset


def smoke(**overrides) -> RunConfig:
    return RunConfig.from_dict({**load_preset("smoke"), **overrides})


def quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    summary = SteerHealLoop(smoke(), out, log=quiet).run_all()
    return out, summary


def test_smoke_run_writes_the_specified_run_directory(finished_run):
    out, summary = finished_run
    for name in ("config.json", "events.jsonl", "summary.json", "report.html", "trajectory.png",
                 "base_eval.json", "prompt_eval.json"):
        assert (out / name).exists(), name
    for r in range(2):
        rd = out / "rounds" / f"r{r:02d}"
        for name in ("vector.safetensors", "dose.json", "completions.jsonl", "filter.json", "eval_steered.json",
                     "heal.json", "eval_healed.json", "round.json", f"adapter/r{r:02d}/adapter_config.json"):
            assert (rd / name).exists(), (r, name)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    rec = summary["rounds"][1]
    assert 0 < rec["kept"] <= rec["total"] and rec["coeff"] > 0 and -1 <= rec["cos_v_v0"] <= 1
    assert {"axis", "pmass"} <= set(rec["healed"]) and rec["healed_vs_base"]["largest_off_target"]
    stages = [json.loads(line)["stage"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert stages[0] == "baseline" and stages[-1] == "done" and stages.count("heal") == 2
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Diary" in html and "Round 2: healed" in html


def test_killed_run_resumes_to_the_same_summary(finished_run, tmp_path, monkeypatch):
    _, uninterrupted = finished_run
    real_eval = SteerHealLoop._eval

    def killed(self, path, *args, **kwargs):
        if path.name == "eval_healed.json" and path.parent.name == "r01":
            raise KeyboardInterrupt("simulated kill")
        return real_eval(self, path, *args, **kwargs)

    monkeypatch.setattr(SteerHealLoop, "_eval", killed)
    with pytest.raises(KeyboardInterrupt):
        SteerHealLoop(smoke(), tmp_path, log=quiet).run_all()
    assert not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(SteerHealLoop, "_eval", real_eval)
    resumed = SteerHealLoop(smoke(), tmp_path, resume=True, log=quiet).run_all()
    assert resumed == uninterrupted
    stages = [json.loads(line)["stage"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert stages.count("heal") == 2 and stages.count("baseline") == 1  # finished stages were not redone


def test_existing_output_directory_needs_resume(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(SteerhealError, match="not empty"):
        SteerHealLoop(smoke(), tmp_path, log=quiet)


def test_unknown_config_keys_are_errors():
    with pytest.raises(SteerhealError, match=r"unknown key\(s\) \['lerning_rate'\] in config.heal"):
        RunConfig.from_dict({"heal": {"lerning_rate": 1}})
    with pytest.raises(SteerhealError, match="unknown key"):
        RunConfig.from_dict({"roundz": 3})
    with pytest.raises(SteerhealError, match="unknown preset"):
        load_preset("nope")


def test_zero_kept_completions_names_the_gate(tmp_path):
    cfg = smoke(rounds=1, filters={"max_tail_ppl": None, "max_repetition": 0.0, "min_tokens": 1})
    with pytest.raises(SteerhealError, match="passed the filters.*'repetition'"):
        SteerHealLoop(cfg, tmp_path, log=quiet).run_all()


def test_presets_parse():
    for name in ("smoke", "demo", "reference"):
        cfg = RunConfig.from_dict(load_preset(name))
        assert cfg.rounds >= 2
    ref = RunConfig.from_dict(load_preset("reference"))
    assert ref.model == "google/gemma-3-4b-it" and ref.heal.lora_rank == 32 and ref.rounds == 8
    assert loop_mod._seed(0, 1, "heal") == loop_mod._seed(0, 1, "heal") != loop_mod._seed(0, 2, "heal")


def test_export_both_formats_load_with_plain_transformers_and_peft(finished_run, tmp_path):
    """`steerheal export --format both`: the merged directory and the PEFT stack equal the student."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from steerheal.chat import encode, render_prompt
    from steerheal.cli import app
    from steerheal.models import load_model

    run_dir, _ = finished_run
    r = CliRunner().invoke(app, ["export", str(run_dir), str(tmp_path / "out"), "--format", "both"])
    assert r.exit_code == 0, r.output
    student = load_model("tiny-random-llama", "cpu", torch.float32)
    loop_mod.load_run_history(student, run_dir)
    batch = encode(student.tokenizer, [render_prompt(student.tokenizer, "a question")], 512)
    with torch.no_grad():
        want = student.model(**batch.model_inputs()).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "merged", dtype=torch.float32)
        torch.testing.assert_close(merged(**batch.model_inputs()).logits, want, atol=1e-4, rtol=0)
        stack_dir = tmp_path / "out" / "adapters"
        names = json.loads((stack_dir / "history.json").read_text())["names"]
        assert names == ["r00", "r01"]
        base = load_model("tiny-random-llama", "cpu", torch.float32).model  # plain PEFT from here on
        assert (base(**batch.model_inputs()).logits - want).abs().max() > 1e-3  # the heal changed something
        peft = PeftModel.from_pretrained(base, stack_dir / "r00", adapter_name="r00")
        peft.load_adapter(stack_dir / "r01", adapter_name="r01")
        peft.base_model.set_adapter(names)
        torch.testing.assert_close(peft(**batch.model_inputs()).logits, want, atol=1e-4, rtol=0)
