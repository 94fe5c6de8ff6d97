"""`steerheal sweep`: the file format, stage sharing, and a 2x2 smoke sweep on a local Ray."""

import json

import pytest

from steerheal.errors import SteerhealError
from steerheal.sweep import collect, execute, load_sweep, parse_sweep
from steerheal.sweep.runner import SweepState, is_finished
from steerheal.sweep.share import SHARED_STAGES, prefix_key


def test_grid_list_and_seeds_expand_to_named_runs():
    sweep = parse_sweep({"preset": "smoke", "seeds": [0, 1], "base": {"rounds": 1},
                         "grid": {"heal.agg": ["mean", "p95"], "heal.tau": [0.5, 1.0]},
                         "runs": [{"heal.reg": "nll"}]})
    names = [r.name for r in sweep.runs]
    assert len(names) == (2 * 2 + 1) * 2 == len(set(names))
    assert "agg-p95_tau-1.0_seed-1" in names and "reg-nll_seed-0" in names
    run = next(r for r in sweep.runs if r.name == "agg-p95_tau-1.0_seed-1")
    assert (run.config.heal.agg, run.config.heal.tau, run.config.seed, run.config.rounds) == ("p95", 1.0, 1, 1)
    assert run.config.model == "tiny-random-llama"  # from the preset
    assert run.config.heal.lr == 0.001  # the preset's nested heal settings survive a dotted override
    assert sweep.varied == ["heal.agg", "heal.reg", "heal.tau", "seed"]
    unquoted = parse_sweep({"preset": "smoke", "grid": {"heal": {"agg": ["mean", "max"]}},  # heal.agg = [...]
                            "runs": [{"heal": {"reg": "nll"}}]})
    assert [r.name for r in unquoted.runs] == ["agg-mean", "agg-max", "reg-nll"]


def test_shipped_matched_sweep_changes_only_the_heal_aggregation_or_reg():
    sweep = load_sweep("agg-matched")
    assert len(sweep.runs) == 15
    configs = [r.config_dict() for r in sweep.runs]
    for cfg in configs:
        cfg["heal"].pop("agg"), cfg["heal"].pop("reg"), cfg.pop("seed")
    assert all(c == configs[0] for c in configs)  # matched: tau, lam, reference, data, model all equal
    assert {(r.config.heal.reg, r.config.heal.agg) for r in sweep.runs if r.config.heal.reg != "nll"} == {
        ("kl_rev", a) for a in ("mean", "rmse", "p95", "max")}


@pytest.mark.parametrize("raw, needle", [
    ({"grid": {"heal.agg": ["mean", "median"]}}, "run agg-median"),  # the bad run is named
    ({"grid": {"heal.agg": []}}, "non-empty list"),
    ({"grd": {}}, "unknown key"),
    ({"runs": [{"seed": 1}, {"seed": 1}]}, "both named"),
    ({"seeds": [0.5]}, "seeds must be"),
    ({"resources": {"num_gpus": -1}}, "num_gpus"),
    ({"resources": {"gpus": 1}}, "unknown key.*gpus"),
    ({"resources": {"num_cpus": "2"}}, "num_cpus must be"),
    ({"runs": ["nll"]}, "list of tables"),
    ({"base": {"rounds": 0}}, "run run: rounds must be"),
])
def test_bad_sweep_files_fail_before_running(raw, needle):
    with pytest.raises(SteerhealError, match=needle):
        parse_sweep({"preset": "smoke", **raw})


def test_every_shipped_sweep_parses_and_the_cli_help_names_it():
    from steerheal.cli.sweep import sweep_cmd
    from steerheal.sweep.spec import shipped_sweeps

    names = shipped_sweeps()
    assert {"smoke-2x2", "agg-matched", "ws-smoke", "ws-kind-alpha"} <= set(names)
    import typing

    help_text = typing.get_type_hints(sweep_cmd, include_extras=True)["sweep"].__metadata__[0].help
    for name in names:
        assert load_sweep(name).runs and name in help_text, name


def test_unknown_sweep_name_lists_the_shipped_ones():
    with pytest.raises(SteerhealError, match="agg-matched"):
        load_sweep("no-such-sweep")


def test_prefix_key_ignores_heal_settings_but_not_the_seed():
    sweep = parse_sweep({"preset": "smoke", "grid": {"heal.agg": ["mean", "max"], "heal.reg": ["nll", "kl_fwd"],
                                                     "seed": [0, 1]}})
    keys = {}
    for run in sweep.runs:
        keys.setdefault(prefix_key(run.config), set()).add(run.config.seed)
    assert len(keys) == 2 and all(len(seeds) == 1 for seeds in keys.values())


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """The shipped 2x2 smoke sweep on a local Ray; one worker is SIGKILLed once mid-heal."""
    out = tmp_path_factory.mktemp("sweep")
    marker = out / "fault-fired"
    with pytest.MonkeyPatch.context() as mp:  # workers inherit the driver's environment on a local Ray
        mp.setenv("STEERHEAL_FAULT", "heal_step:1")
        mp.setenv("STEERHEAL_FAULT_ONCE", str(marker))
        mp.delenv("RAY_ADDRESS", raising=False)
        sweep = load_sweep("smoke-2x2")
        lines = []
        state = execute(sweep, out, log=lines.append)
    return sweep, out, state, lines, marker


def test_smoke_sweep_runs_every_run_and_retries_the_killed_one(smoke_sweep):
    sweep, out, state, lines, marker = smoke_sweep
    assert marker.exists()  # the fault fired, in exactly one worker
    attempts = {name: [a["status"] for a in tries] for name, tries in state.attempts.items()}
    assert sorted(attempts) == sorted(r.name for r in sweep.runs)
    assert sorted(map(tuple, attempts.values())) == [("done",)] * 3 + [("failed", "done")]
    killed = next(n for n, a in attempts.items() if a[0] == "failed")
    assert "worker lost" in state.attempts[killed][0]["error"]
    events = [json.loads(x) for x in (out / "runs" / killed / "events.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events].count("generate") == 1  # the retry resumed, it did not restart


def test_runs_differing_only_in_agg_share_round0_data(smoke_sweep):
    _, out, _, lines, _ = smoke_sweep
    for seed in (0, 1):
        leader, member = out / "runs" / f"agg-mean_seed-{seed}", out / "runs" / f"agg-rmse_seed-{seed}"
        for files in SHARED_STAGES.values():
            for rel in files:
                assert (leader / rel).read_bytes() == (member / rel).read_bytes()
        shared = [json.loads(x) for x in (member / "events.jsonl").read_text().splitlines()]
        assert {e.get("shared_from") for e in shared if e["stage"] in {s for s, _ in SHARED_STAGES}} == {leader.name}
        assert json.loads((member / "config.json").read_text())["heal"]["agg"] == "rmse"
        assert (member / "rounds" / "r00" / "adapter").is_dir() and (member / "summary.json").is_file()
    assert sum("shared from" in line for line in lines) == 2


def test_sweep_results_table_and_plot(smoke_sweep):
    sweep, out, state, _, _ = smoke_sweep
    results = collect(sweep, out, state)
    assert [r["run"] for r in results["runs"]] == [r.name for r in sweep.runs]
    for row in results["runs"]:
        assert row["status"] == "done" and row["rounds_done"] == 1 and row["wall_s"] > 0
        assert row["delta_lo"] <= row["delta"] <= row["delta_hi"]
        assert 0 < row["pmass_ratio"]
    assert {g["heal.agg"]: g["n"] for g in results["groups"]} == {"mean": 2, "rmse": 2}
    table = (out / "results.md").read_text()
    assert table.count("| agg-") == 4 and "mean delta" in table
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.csv").read_text().splitlines()[0].startswith("run,heal.agg,seed,status")


def test_resubmit_skips_finished_runs_and_rejects_a_changed_config(smoke_sweep):
    sweep, out, _, _, _ = smoke_sweep
    lines = []
    state = execute(sweep, out, log=lines.append)  # returns before starting Ray: nothing to run
    assert "4 already finished, 0 to run" in lines[0]
    assert all(len(a) <= 2 for a in state.attempts.values())
    changed = parse_sweep({"preset": "smoke", "base": {"rounds": 1, "n_prompts": 4},
                           "grid": {"heal.agg": ["mean", "rmse"], "seed": [0, 1]}})
    with pytest.raises(SteerhealError, match="different config.*n_prompts"):
        execute(changed, out, log=lambda _: None)
    assert SweepState.load(out / "state.json").attempts == state.attempts
    longer = parse_sweep({"preset": "smoke", "base": {"rounds": 2}, "grid": {"heal.agg": ["mean", "rmse"],
                                                                             "seed": [0, 1]}})
    assert not any(is_finished(r, out / "runs" / r.name) for r in longer.runs)  # more rounds extend the runs


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k not in {"time", "seconds", "wall_s"}}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def test_shared_stages_equal_what_a_differently_healed_run_computes(smoke_sweep, tmp_path, monkeypatch):
    """Sharing is valid: a run with other heal settings computes the leader's round-0 files itself."""
    from dataclasses import asdict

    import torch

    from steerheal.config import RunConfig
    from steerheal.loop import SteerHealLoop
    from steerheal.steering import SteeringVector

    sweep, out, _, _, _ = smoke_sweep
    leader = next(r for r in sweep.runs if r.name == "agg-mean_seed-0")
    other = asdict(leader.config)
    other["heal"] = {**other["heal"], "agg": "max", "reg": "kl_fwd", "tau": 0.0}
    monkeypatch.setenv("STEERHEAL_FAULT", "nan_loss")  # stop at the heal, after every shared stage
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's worker ran it (num_cpus = 1): the same reduction order
    try:
        with pytest.raises(SteerhealError, match="non-finite"):
            SteerHealLoop(RunConfig.from_dict(other), tmp_path / "own", log=lambda *_: None).run_all()
    finally:
        torch.set_num_threads(threads)
    own, lead = tmp_path / "own", out / "runs" / leader.name
    for files in SHARED_STAGES.values():
        for rel in files:
            if rel.endswith(".safetensors"):
                a, b = SteeringVector.load(own / rel), SteeringVector.load(lead / rel)
                assert all(torch.equal(a.directions[k], b.directions[k]) for k in a.directions), rel
            elif rel.endswith(".jsonl"):
                rows = lambda p: [_strip_times(json.loads(x)) for x in p.read_text().splitlines()]
                assert rows(own / rel) == rows(lead / rel), rel
            else:
                assert _strip_times(json.loads((own / rel).read_text())) == \
                    _strip_times(json.loads((lead / rel).read_text())), rel


# Weight steering: `job = "weight-steer"`, adapter type x alpha.

def test_weight_steer_sweep_expands_kind_by_alpha_and_shares_one_training():
    from steerheal.config import WeightSteerRun
    from steerheal.sweep.jobs import WeightSteerJob, training_name

    sweep = load_sweep("ws-smoke")
    assert sweep.job == "weight-steer" and sweep.varied == ["compare.alpha", "kind"]
    assert [r.name for r in sweep.runs] == ["kind-lora_alpha-1.0", "kind-lora_alpha-4.0", "kind-ia3_alpha-1.0",
                                            "kind-ia3_alpha-4.0"]
    assert all(isinstance(r.config, WeightSteerRun) for r in sweep.runs)
    run = sweep.runs[1]
    assert (run.config.kind, run.config.compare.alpha, run.config.train.n_prompts) == ("lora", 4.0, 6)
    assert run.config.compare.calibrate.n_tokens == 6  # a dotted key three levels deep
    job = WeightSteerJob(sweep, "out")
    assert len({job.group(r) for r in sweep.runs}) == 1 and job.kinds[job.group(run)] == ["lora", "ia3"]
    seeded = parse_sweep({"job": "weight-steer", "seeds": [0, 1], "grid": {"kind": ["lora", "ia3"],
                                                                           "compare.alpha": [1.0, 2.0]}})
    assert {r.config.train.seed for r in seeded.runs} == {0, 1}  # a seed is a training seed
    seeded_job = WeightSteerJob(seeded, "out")
    assert len({seeded_job.group(r) for r in seeded.runs}) == 2  # one training per seed, not per alpha
    assert {training_name(r) for r in seeded.runs} == {"seed-0", "seed-1"}
    # A listed run that leaves train.lr at its default trains with the grid's run that sets it to that value.
    mixed = parse_sweep({"job": "weight-steer", "grid": {"train.lr": [0.0005, 0.001]}, "runs": [{"kind": "ia3"}]})
    mixed_job = WeightSteerJob(mixed, "out")
    dirs = {r.name: mixed_job.train_dir(r) for r in mixed.runs}
    assert dirs["kind-ia3"] == dirs["lr-0.0005"] != dirs["lr-0.001"]


@pytest.mark.parametrize("raw, needle", [
    ({"preset": "demo"}, "presets are steer-heal loop settings"),
    ({"job": "distil"}, "unknown job"),
    ({"base": {"kind": "all"}}, "one adapter type"),
    ({"base": {"kind": "lorax"}}, "lorax"),
    ({"grid": {"compare.alpha": [0.0, 1.0]}}, "run alpha-0.0: alpha must be > 0"),
    ({"base": {"train.kinds": ["lora"]}}, "train.kinds is not used"),
    ({"base": {"compare.signs": [1, 2]}}, "signs must be"),
    ({"base": {"heal.agg": "mean"}}, "unknown key.*heal"),
])
def test_bad_weight_steer_sweep_files_fail_before_running(raw, needle):
    with pytest.raises(SteerhealError, match=needle):
        parse_sweep({"job": "weight-steer", **raw})


@pytest.fixture(scope="module")
def ws_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws-sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        sweep = load_sweep("ws-smoke")
        lines = []
        state = execute(sweep, out, log=lines.append)
    return sweep, out, state, lines


def test_weight_steer_sweep_trains_once_and_measures_kl_per_alpha(ws_sweep):
    sweep, out, state, lines = ws_sweep
    assert {n: [a["status"] for a in tries] for n, tries in state.attempts.items()} == {
        r.name: ["done"] for r in sweep.runs}
    train = out / "train" / "default"
    assert set(json.loads((train / "train.json").read_text())) == {"lora", "ia3"}
    logs = [(out / "runs" / r.name / "log.txt").read_text() for r in sweep.runs]
    assert sum("trained in" in log for log in logs) == 1  # the leader trained both types; the rest reused them
    assert sum("uses the dW trained by" in line for line in lines) == 3
    assert len(list((train / "compare.parts").glob("base-*.json"))) == 1  # one base row for all four runs
    results = collect(sweep, out, state)
    rows = {(r["kind"], r["compare.alpha"], r["sign"]): r for r in results["runs"]}
    assert len(rows) == 8
    for (kind, alpha, sign), row in rows.items():
        assert row["alpha"] == (alpha if sign == "+" else -alpha) and row["converged"] is None
        assert row["delta_lo"] <= row["delta"] <= row["delta_hi"] and row["pmass_ratio"] > 0
        if alpha == 1.0:
            assert rows[(kind, 4.0, sign)]["kl_p95"] > row["kl_p95"] > 0  # a larger alpha costs more KL
    assert sorted(r["label"] for r in results["references"]) == ["prompt +", "prompt -", "vector +", "vector -"]
    table = (out / "results.md").read_text()
    assert table.count("| kind-") == 8 and "| vector + |" in table
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_weight_steer_resubmit_skips_finished_runs_and_rejects_a_changed_config(ws_sweep):
    sweep, out, _, _ = ws_sweep
    lines = []
    execute(sweep, out, log=lines.append)
    assert "4 already finished, 0 to run" in lines[0]
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("steerheal").joinpath("data", "sweeps", "ws-smoke.toml").read_text())
    raw["base"]["limit"] = 10
    with pytest.raises(SteerhealError, match=r"different config.*\['limit'\]"):
        execute(parse_sweep(raw), out, log=lambda _: None)


def test_weight_steer_resubmit_with_a_new_kind_trains_it_once(ws_sweep):
    """A finished group that needs one more adapter type: one run trains it, the others wait for it."""
    import tomllib
    from importlib import resources

    _, out, _, _ = ws_sweep
    raw = tomllib.loads(resources.files("steerheal").joinpath("data", "sweeps", "ws-smoke.toml").read_text())
    raw["grid"]["kind"] = ["lora", "ia3", "oft"]
    lines = []
    state = execute(parse_sweep(raw), out, log=lines.append)
    assert "6 runs, 4 already finished, 2 to run" in lines[0]
    assert [state.attempts[n][-1]["status"] for n in ("kind-oft_alpha-1.0", "kind-oft_alpha-4.0")] == ["done"] * 2
    logs = [(out / "runs" / n / "log.txt").read_text() for n in ("kind-oft_alpha-1.0", "kind-oft_alpha-4.0")]
    assert sum("oft: trained in" in log for log in logs) == 1
    # The second waited until the first had trained oft and compared (not started beside it).
    assert lines.index("  kind-oft_alpha-4.0: uses the dW trained by kind-oft_alpha-1.0") == \
        lines.index("  start kind-oft_alpha-4.0 (attempt 1)") - 1
    assert set(json.loads((out / "train" / "default" / "train.json").read_text())) == {"lora", "ia3", "oft"}

