import json

from steerheal.demo import DemoConfig, run_demo
from steerheal.steering import SteeringVector


def test_demo_on_the_embedded_model_visibly_changes_the_text(tmp_path):
    cfg = DemoConfig(n_contexts=48, n_calib_prompts=8, max_new_tokens=32)
    lines = []
    result = run_demo(cfg, tmp_path, log=lines.append)
    assert abs(result.p95_kl - cfg.target_kl) < 0.05
    changed = [r for r in result.rows if r["steered"] != r["unsteered"]]
    assert len(result.rows) == 3 and len(changed) >= 2
    for name in ("vector.safetensors", "vector.gguf", "calibration.json", "completions.json", "summary.json"):
        assert (tmp_path / name).exists()
    vec = SteeringVector.load(tmp_path / "vector.safetensors")
    assert vec.coeff == result.coeff and vec.calibrated_kl == cfg.target_kl
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["coeff"] == result.coeff
    assert any("calibrated" in line for line in lines)
