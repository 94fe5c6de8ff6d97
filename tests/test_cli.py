import json

import pytest
import torch
from typer.testing import CliRunner

from steerheal.cli import app, main
from steerheal.steering import SteeringVector

runner = CliRunner()
TINY = ["--model", "tiny-random-llama", "--dtype", "float32", "--device", "cpu"]
COMMANDS = [[], ["models"], ["pairs"], ["generate"], ["demo"], ["eval"], ["eval", "compare"], ["run"], ["heal"],
            ["report"], ["export"], ["vector"],
            ["vector", "extract"],
            ["vector", "calibrate"], ["vector", "export-gguf"], ["vector", "info"]]


def run_main(args, monkeypatch, capsys):
    """Run the real entry point (with its error handling) and return (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["steerheal", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_extract_info_gguf_calibrate_generate_round_trip(tmp_path):
    vec = tmp_path / "v.safetensors"
    r = runner.invoke(app, ["vector", "extract", *TINY, "--pair", "love-humanity", "--n-contexts", "8",
                            "--layers", "1,2", "--out", str(vec), "--gguf", str(tmp_path / "v.gguf")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "v.gguf").exists()
    info = json.loads(runner.invoke(app, ["vector", "info", str(vec)]).output)
    assert info["n_contexts"] == 8 and set(info["norms"]) == {"1", "2"}
    r = runner.invoke(app, ["vector", "calibrate", *TINY, "--vector", str(vec), "--target-kl", "0.01",
                            "--n-prompts", "4", "--n-tokens", "4", "--write", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["n_evals"] == len(result["trace"]) and result["coeff"] > 0
    assert SteeringVector.load(vec).coeff == pytest.approx(result["coeff"])
    r = runner.invoke(app, ["generate", *TINY, "--vector", str(vec), "--prompt", "hello", "--prompt", "bye",
                            "--n", "2", "--max-new-tokens", "5", "--json"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.output.strip().splitlines()]
    assert len(recs) == 4 and all(rec["coeff"] == pytest.approx(result["coeff"]) for rec in recs)


@pytest.mark.parametrize("args,needle", [
    (["vector", "extract", "--model", "no-such-model", "--pair", "love-humanity"], "unknown model spec"),
    (["vector", "extract", *TINY, "--pos", "", "--neg", "x"], "empty persona"),
    (["vector", "extract", *TINY, "--pair", "nope"], "unknown persona pair"),
    (["vector", "extract", *TINY, "--pair", "love-humanity", "--layers", "4"], "out of range"),
    (["generate", *TINY], "no prompts given"),
])
def test_bad_input_gives_one_error_line_and_writes_nothing(args, needle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "v.safetensors"
    code, _, err = run_main([*args, "--out", str(out)] if "extract" in args else args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("steerheal: error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Fix:" in lines[0]
    assert not out.exists()


def test_vector_for_another_hidden_size_is_rejected(tmp_path, monkeypatch, capsys):
    path = SteeringVector(directions={1: torch.ones(32)}, model_spec="x").save(tmp_path / "v.safetensors")
    code, _, err = run_main(["generate", *TINY, "--vector", str(path), "--coeff", "1", "--prompt", "hi"],
                            monkeypatch, capsys)
    assert code == 2 and "hidden size" in err


def test_prompt_too_long_at_the_read_position_is_rejected(tmp_path, monkeypatch, capsys):
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("x" * 3000 + "\n")
    out = tmp_path / "v.safetensors"
    code, _, err = run_main(["vector", "extract", *TINY, "--pair", "love-humanity", "--contexts", str(ctx),
                             "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and "never truncated" in err and not out.exists()


def test_unwritable_output_is_a_clear_error(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_main(["vector", "extract", *TINY, "--pair", "love-humanity", "--n-contexts", "2",
                             "--out", str(blocker / "v.safetensors")], monkeypatch, capsys)
    assert code == 2 and "cannot write" in err


def test_eval_and_compare_on_a_tiny_model(tmp_path):
    outs = []
    for name, extra in (("a", []), ("b", ["--system", "You respect authority."])):
        out = tmp_path / f"{name}.json"
        r = runner.invoke(app, ["eval", *TINY, "--dataset", "own", "--limit", "7", "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        assert "F_nats" in r.output and out.exists()
        outs.append(out)
    r = runner.invoke(app, ["eval", "compare", str(outs[0]), str(outs[1]), "--axis", "Authority",
                            "--resamples", "1000"])
    assert r.exit_code == 0, r.output
    assert "<- axis" in r.output and "largest off-target mover" in r.output


def test_eval_rejects_mismatched_protocols_and_missing_args(tmp_path, monkeypatch, capsys):
    fc, jb = tmp_path / "fc.json", tmp_path / "jb.json"
    for path, proto in ((fc, "forced-choice"), (jb, "json-bool")):
        r = runner.invoke(app, ["eval", *TINY, "--limit", "2", "--protocol", proto, "--out", str(path)])
        assert r.exit_code == 0, r.output
    code, _, err = run_main(["eval", "compare", str(fc), str(jb)], monkeypatch, capsys)
    assert code == 2 and "cannot compare" in err
    code, _, err = run_main(["eval", "--model", "tiny-random-llama"], monkeypatch, capsys)
    assert code == 2 and "--out" in err
    code, _, err = run_main(["eval", *TINY, "--dataset", "tinymfv:classic", "--data-dir", str(tmp_path),
                             "--out", str(tmp_path / "x.json")], monkeypatch, capsys)
    assert code == 2 and "no vignette set 'classic'" in err


def test_run_report_and_heal_commands_on_the_smoke_preset(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "--preset", "smoke", "--rounds", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "r1 healed" in r.output and (out / "report.html").exists()
    (out / "report.html").unlink()
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0 and (out / "report.html").exists()
    heal_out = tmp_path / "adapter"
    r = runner.invoke(app, ["heal", *TINY, "--completions", str(out / "rounds/r00/completions.jsonl"),
                            "--out", str(heal_out), "--epochs", "1", "--reg", "kl_rev", "--agg", "p95"])
    assert r.exit_code == 0, r.output
    assert (heal_out / "r00" / "adapter_config.json").exists() and (heal_out / "heal.json").exists()
    r = runner.invoke(app, ["eval", *TINY, "--adapter", str(heal_out / "r00"), "--limit", "2",
                            "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    merged_dir = tmp_path / "merged"
    r = runner.invoke(app, ["export", str(out), str(merged_dir)])
    assert r.exit_code == 0, r.output
    check_merged_export(out, merged_dir)


def check_merged_export(run_dir, merged_dir):
    """The exported model loads with plain transformers and equals the stacked student."""
    from transformers import AutoModelForCausalLM

    from steerheal.chat import encode, render_prompt
    from steerheal.loop import load_run_history
    from steerheal.models import load_model

    lm = load_model("tiny-random-llama", "cpu", torch.float32)
    load_run_history(lm, run_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    batch = encode(lm.tokenizer, [render_prompt(lm.tokenizer, "hello there")], 512)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch.model_inputs()).logits, lm.model(**batch.model_inputs()).logits,
                                   atol=1e-4, rtol=0)


def test_run_into_a_non_empty_directory_without_resume_fails(tmp_path, monkeypatch, capsys):
    (tmp_path / "x").write_text("")
    code, _, err = run_main(["run", "--preset", "smoke", "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "--resume" in err
