import pytest

from steerheal import resources
from steerheal.config import RunConfig
from steerheal.errors import SteerhealError
from steerheal.loop import SteerHealLoop, load_preset


def test_a_run_refuses_to_start_without_disk_for_its_artefacts(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "free_bytes", lambda path: 5 * resources.MB)
    out = tmp_path / "run"
    with pytest.raises(SteerhealError, match="not enough free disk for a 2-round run: 5 MB free"):
        SteerHealLoop(RunConfig.from_dict(load_preset("smoke")), out)
    assert not out.exists()


def test_disk_estimate_grows_with_rounds_and_adapter_size():
    small = resources.lora_bytes(576, 30, 8, (0.2, 0.8))
    assert resources.lora_bytes(576, 30, 16, (0.2, 0.8)) == 2 * small
    assert resources.run_disk_bytes(3, small) < resources.run_disk_bytes(6, small)


def test_free_bytes_looks_at_the_nearest_existing_parent(tmp_path):
    assert resources.free_bytes(tmp_path / "not" / "yet") == resources.free_bytes(tmp_path) > 0


def test_memory_warning_names_the_stage_when_a_batch_will_not_fit(tiny_llama, monkeypatch):
    assert resources.memory_warning(tiny_llama, 4, 64, training=True, what="heal") is None  # tiny fits anywhere
    monkeypatch.setattr(resources, "available_memory", lambda device: resources.MB // 4)
    warning = resources.memory_warning(tiny_llama, 64, 512, training=True, what="heal")
    assert warning.startswith("warning: heal batch of 64 x 512 tokens needs about") and "batch_size" in warning


def test_training_batches_are_estimated_larger_than_inference():
    args = (576, 30, 49152, 8, 256)
    assert resources.batch_bytes(*args, training=True) > 3 * resources.batch_bytes(*args, training=False)
