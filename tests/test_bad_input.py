"""The bad-input suite: every case exits with status 2, prints one line naming the problem and
the fix, and leaves no new file or directory behind. Keep docs/errors.md in step (tested)."""

import json
from pathlib import Path

import pytest
import torch

from steerheal.cli import main
from steerheal.steering import SteeringVector

TINY = ["-m", "tiny-random-llama", "--dtype", "float32", "--device", "cpu"]
ERRORS_DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def vector_file(d: Path, d_model: int = 64, layers=(1, 2), spec="tiny-random-llama") -> Path:
    vec = SteeringVector({k: torch.ones(d_model) for k in layers}, model_spec=spec, d_model=d_model, n_layers=4)
    return vec.save(d / f"v{d_model}.safetensors")


def gemma_adapter(d: Path) -> Path:
    """A LoRA saved by the heal CLI's code path for tiny-random-gemma3 (same shapes as tiny llama)."""
    from steerheal.heal.adapters import AdapterHistory, LoraSpec
    from steerheal.models import load_model

    hist = AdapterHistory(load_model("tiny-random-gemma3", "cpu", torch.float32))
    hist.new_round(LoraSpec(rank=2))
    return hist.save(d / "gemma_adapter") / "r00"


def vignette_dir(d: Path) -> Path:
    write(d / "vign" / "vignettes_broken_other_violate.jsonl",
          json.dumps({"id": "x1", "text": "Someone did a thing."}) + "\n")  # no foundation, no ratings
    return d / "vign"


# (id, argv builder(tmp input dir, tmp output dir), expected fragment, environment)
CASES = [
    ("unknown-model", lambda i, o: ["vector", "extract", "-m", "no-such-model-xyz", "--pair", "love-humanity",
                                    "-o", str(o / "v.safetensors")], "no-such-model-xyz", {}),
    ("unknown-option", lambda i, o: ["generate", *TINY, "--temprature", "0.5", "-p", "hi"], "No such option", {}),
    ("unknown-pair", lambda i, o: ["vector", "extract", *TINY, "--pair", "nope", "-o", str(o / "v.safetensors")],
     "unknown persona pair", {}),
    ("empty-persona", lambda i, o: ["vector", "extract", *TINY, "--pos", " ", "--neg", "You are kind.",
                                    "-o", str(o / "v.safetensors")], "empty persona", {}),
    ("blank-context-file", lambda i, o: ["vector", "extract", *TINY, "--pair", "love-humanity", "--contexts",
                                         str(write(i / "ctx.txt", "\n  \n\n")), "-o", str(o / "v.safetensors")],
     "is empty", {}),
    ("context-jsonl-without-text", lambda i, o: ["vector", "extract", *TINY, "--pair", "love-humanity", "--contexts",
                                                 str(write(i / "ctx.jsonl", '{"msg": "hi"}\n')),
                                                 "-o", str(o / "v.safetensors")], "no 'text' field", {}),
    ("malformed-jsonl", lambda i, o: ["vector", "extract", *TINY, "--pair", "love-humanity", "--contexts",
                                      str(write(i / "ctx.jsonl", '{"text": "hi"\n')), "-o", str(o / "v.safetensors")],
     "is not valid JSON", {}),
    ("layer-out-of-range", lambda i, o: ["vector", "extract", *TINY, "--pair", "love-humanity", "--layers", "9",
                                         "-o", str(o / "v.safetensors")], "out of range", {}),
    ("unwritable-output", lambda i, o: ["vector", "extract", *TINY, "--pair", "love-humanity", "--n-contexts", "2",
                                        "-o", str(write(i / "afile", "x") / "sub" / "v.safetensors")],
     "cannot write", {}),
    ("vector-other-hidden-size", lambda i, o: ["generate", *TINY, "--vector", str(vector_file(i, 32)), "--coeff", "1",
                                               "-p", "hi"], "hidden size", {}),
    ("vector-not-a-vector", lambda i, o: ["vector", "info", str(write(i / "x.safetensors", "junk"))],
     "safetensors", {}),
    ("prompt-over-context", lambda i, o: ["generate", *TINY, "-p", "word " * 1200, "--max-new-tokens", "4"],
     "over the limit", {}),
    ("bad-temperature", lambda i, o: ["generate", *TINY, "-p", "hi", "--temperature", "0"], "temperature", {}),
    ("calibrate-negative-target", lambda i, o: ["vector", "calibrate", *TINY, "-v", str(vector_file(i)),
                                                "--target-kl", "-1"], "target_kl", {}),
    ("unknown-protocol", lambda i, o: ["eval", *TINY, "--protocol", "vibes", "-o", str(o / "e.json")],
     "unknown protocol", {}),
    ("unknown-dataset", lambda i, o: ["eval", *TINY, "--dataset", "mystery", "-o", str(o / "e.json")],
     "dataset", {}),
    ("vignette-missing-fields", lambda i, o: ["eval", *TINY, "--dataset", "tinymfv:broken", "--data-dir",
                                              str(vignette_dir(i)), "-o", str(o / "e.json")],
     "vignettes_broken_other_violate.jsonl:1", {}),
    ("adapter-from-another-base", lambda i, o: ["eval", *TINY, "--adapter", str(gemma_adapter(i)), "--limit", "2",
                                                "-o", str(o / "e.json")], "was trained on 'tiny-random-gemma3'", {}),
    ("compare-different-protocols", lambda i, o: ["eval", "compare",
                                                  str(write(i / "a.json", json.dumps({"protocol": "forced-choice",
                                                                                      "rows": []}))),
                                                  str(write(i / "b.json", json.dumps({"protocol": "json-bool",
                                                                                      "rows": []})))],
     "cannot compare", {}),
    ("unknown-preset", lambda i, o: ["run", "--preset", "gigantic", "--out", str(o / "run")], "unknown preset", {}),
    ("malformed-toml", lambda i, o: ["run", "--preset", "smoke", "--config", str(write(i / "c.toml", "rounds = = 2")),
                                     "--out", str(o / "run")], "not valid TOML", {}),
    ("malformed-json-config", lambda i, o: ["run", "--preset", "smoke", "--config", str(write(i / "c.json", "{")),
                                            "--out", str(o / "run")], "not valid JSON", {}),
    ("unknown-config-key", lambda i, o: ["run", "--preset", "smoke", "--config",
                                         str(write(i / "c.toml", "[heal]\nlerning_rate = 1\n")),
                                         "--out", str(o / "run")], "unknown key(s) ['lerning_rate']", {}),
    ("negative-rounds", lambda i, o: ["run", "--preset", "smoke", "--rounds", "-1", "--out", str(o / "run")],
     "rounds must be", {}),
    ("negative-tau", lambda i, o: ["run", "--preset", "smoke", "--config",
                                   str(write(i / "c.json", '{"heal": {"tau": -0.5}}')), "--out", str(o / "run")],
     "tau", {}),
    ("unknown-axis", lambda i, o: ["run", "--preset", "smoke", "--config", str(write(i / "c.json", '{"axis": "Joy"}')),
                                   "--out", str(o / "run")], "unknown axis", {}),
    ("existing-run-without-resume", lambda i, o: ["run", "--preset", "smoke", "--out",
                                                  str(write(i / "run" / "config.json", "{}").parent)],
     "not empty", {}),
    ("run-out-is-a-file", lambda i, o: ["run", "--preset", "smoke", "--out", str(write(i / "run.txt", "x"))],
     "is a file", {}),
    ("report-not-a-run", lambda i, o: ["report", str(write(i / "empty" / "x.txt", "x").parent)],
     "has no summary.json", {}),
    ("unknown-adapter-type", lambda i, o: ["weight-steer", "train", *TINY, "--adapter", "lora,vera9",
                                           "--out", str(o / "ws")], "unknown adapter type 'vera9'", {}),
    ("weight-steer-compare-untrained", lambda i, o: ["weight-steer", "compare", str(i), "--out", str(o / "c.json")],
     "not a weight-steering directory", {}),
]

def topics_file(d: Path, right: str = "ab", wrong: str = "ab") -> Path:
    topic = {"label": "cat", "items": [{"prompt": "which?", "right": right, "wrong": wrong}], "contexts": ["fur"]}
    other = {"label": "dog", "items": [{"prompt": "what?", "right": "cd", "wrong": "ef"}], "contexts": ["barks"]}
    return write(d / "topics.json", json.dumps({"question": "which?", "detect_question": "pushed?",
                                                "neutral_prompts": ["hi"], "no_questions": ["is up down?"],
                                                "topics": [topic, other]}))


FACT = {"id": "f1", "true": "Rome", "false": "Rome", "questions": ["capital?", "the capital?", "which city?"]}
CASES += [
    ("introspect-layer-out-of-range", lambda i, o: ["introspect", "run", *TINY, "--layer", "9", "--out",
                                                    str(o / "i")], "layer 9 is out of range", {}),
    ("introspect-unknown-mode", lambda i, o: ["introspect", "run", *TINY, "--mode", "vibes", "--out", str(o / "i")],
     "unknown mode", {}),
    ("topic-without-valid-target", lambda i, o: ["introspect", "run", *TINY, "--topics", str(topics_file(i)),
                                                 "--out", str(o / "i")], "no valid target tokenisation", {}),
    ("facts-alternatives-tokenise-identically", lambda i, o: ["resist", *TINY, "--facts",
                                                              str(write(i / "f.jsonl", json.dumps(FACT) + "\n")),
                                                              "--out", str(o / "r")], "tokenise identically", {}),
    ("facts-not-a-fact", lambda i, o: ["resist", *TINY, "--facts", str(write(i / "f.jsonl", '{"id": "f1"}\n')),
                                       "--out", str(o / "r")], "is not a fact", {}),
    ("resist-zero-multiplier", lambda i, o: ["resist", *TINY, "--multipliers", "0,1", "--out", str(o / "r")],
     "multipliers must be", {}),
]

def melbo_dir(d: Path) -> Path:
    """A one-vector MELBO search on the tiny Llama (seconds)."""
    from steerheal.config import DiscoverConfig
    from steerheal.discover.pipeline import search
    from steerheal.models import load_model

    search(load_model("tiny-random-llama", "cpu", torch.float32), DiscoverConfig(method="melbo", n=1, melbo_steps=1),
           d / "disc", log=lambda *_: None)
    return d / "disc"


CASES += [
    ("discover-unknown-method", lambda i, o: ["discover", "search", *TINY, "--method", "vibes", "--out", str(o / "d")],
     "unknown method", {}),
    ("discover-melbo-target-before-source", lambda i, o: ["discover", "search", *TINY, "--method", "melbo",
                                                          "--source", "2", "--target", "1", "--out", str(o / "d")],
     "must come after source", {}),
    ("discover-score-not-a-search", lambda i, o: ["discover", "score", str(i)], "not a discovery directory", {}),
    ("discover-catalogue-from-another-model", lambda i, o: ["discover", "score", str(melbo_dir(i)), "-m",
                                                            "tiny-random-gemma3", "--dtype", "float32"],
     "was searched on tiny-random-llama", {}),
    ("unknown-device", lambda i, o: ["eval", "-m", "tiny-random-llama", "--device", "gpu0", "--limit", "1",
                                     "-o", str(o / "e.json")], "unknown device 'gpu0'", {}),
    ("export-unknown-format", lambda i, o: ["export", str(i), str(o / "x"), "--format", "gguf"],
     "unknown export format", {}),
    ("unknown-sweep", lambda i, o: ["sweep", "no-such-sweep", "--out", str(o / "sw")], "not found", {}),
    ("sweep-bad-value", lambda i, o: ["sweep", str(write(i / "s.toml", '[grid]\n"heal.agg" = ["median"]\n')),
                                      "--out", str(o / "sw")], "run agg-median", {}),
    ("sweep-run-dir-holds-another-config", lambda i, o: [
        "sweep", "smoke-2x2", "--out", str(write(o / "sw" / "runs" / "agg-mean_seed-0" / "config.json",
                                                  '{"model": "smollm2-135m"}').parents[2])],
     "holds a different config", {}),
    ("weight-steer-sweep-with-preset", lambda i, o: ["sweep", str(write(i / "w.toml", 'job = "weight-steer"\n'
                                                                        'preset = "demo"\n')), "--out", str(o / "sw")],
     "presets are steer-heal loop settings", {}),
    ("weight-steer-sweep-zero-alpha", lambda i, o: ["sweep", str(write(i / "w.toml", 'job = "weight-steer"\n[grid]\n'
                                                                       '"compare.alpha" = [0.0, 1.0]\n')),
                                                    "--out", str(o / "sw")], "alpha must be > 0", {}),
]

# Cases that run part of a loop: slower, still seconds on the tiny model.
LOOP_CASES = [
    ("zero-kept-completions", lambda i, o: ["run", "--preset", "smoke", "--config",
                                            str(write(i / "c.json", '{"filters": {"max_tail_ppl": 1e-9}}')),
                                            "--out", str(o / "run")], "kept", {}),
    ("nan-loss", lambda i, o: ["run", "--preset", "smoke", "--out", str(o / "run")], "non-finite heal loss",
     {"STEERHEAL_FAULT": "nan_loss"}),
]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_case(case, tmp_path, monkeypatch, capsys):
    _, build, fragment, env = case
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    argv = build(inputs, outputs)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before_in, before_out = tree(inputs), tree(outputs)
    monkeypatch.setattr("sys.argv", ["steerheal", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    return exc.value.code, err, fragment, (before_in, tree(inputs)), (before_out, tree(outputs))


def check(result, allow_new_in_outputs: bool = False):
    code, err, fragment, (in0, in1), (out0, out1) = result
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("steerheal: error: ") and ". Fix: " in lines[0], err
    assert fragment in lines[0], lines[0]
    assert in1 == in0, f"inputs changed: {sorted(in1 - in0)}"
    if not allow_new_in_outputs:
        assert out1 == out0, f"partial artefacts left: {sorted(out1 - out0)}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_no_artefacts(case, tmp_path, monkeypatch, capsys):
    check(run_case(case, tmp_path, monkeypatch, capsys))


@pytest.mark.parametrize("case", LOOP_CASES, ids=[c[0] for c in LOOP_CASES])
def test_failing_loop_stage_gives_one_line_and_keeps_only_finished_stages(case, tmp_path, monkeypatch, capsys):
    result = run_case(case, tmp_path, monkeypatch, capsys)
    check(result, allow_new_in_outputs=True)  # finished stages stay so --resume can continue
    run = tmp_path / "out" / "run"
    names = {p.name for p in run.rglob("*")}
    assert "summary.json" not in names and not [n for n in names if n.endswith(".tmp")]


def test_the_suite_covers_at_least_25_inputs_and_docs_list_them_all():
    ids = [c[0] for c in CASES + LOOP_CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)
    doc = ERRORS_DOC.read_text()
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, f"docs/errors.md does not list {missing}"
