import gguf
import numpy as np
import pytest
import torch

from steerheal.errors import SteerhealError
from steerheal.steering import SteeringVector


def make_vector(**kw):
    g = torch.Generator().manual_seed(0)
    dirs = {2: torch.randn(64, generator=g), 3: torch.randn(64, generator=g)}
    return SteeringVector(directions=dirs, model_spec="tiny-random-llama", model_revision="r1",
                          n_layers=4, pos="P", neg="N", n_contexts=5, **kw)


def test_save_load_round_trips_tensors_and_metadata_exactly(tmp_path):
    v = make_vector(coeff=1.5, calibrated_kl=1.0, extra={"residual_norm": {"2": 3.0}})
    v.save(tmp_path / "v.safetensors")
    w = SteeringVector.load(tmp_path / "v.safetensors")
    assert w.metadata() == v.metadata()
    for k in v.layers:
        assert torch.equal(v.directions[k], w.directions[k])


def test_gguf_export_reads_back_with_documented_layer_numbering(tmp_path):
    v = make_vector()
    v.to_gguf(tmp_path / "v.gguf", model_hint="llama")
    reader = gguf.GGUFReader(str(tmp_path / "v.gguf"))
    assert reader.fields["controlvector.layer_count"].parts[-1][0] == 2
    names = {t.name: t for t in reader.tensors}
    assert set(names) == {"direction.2", "direction.3"}  # direction.N == output of block N
    for k in (2, 3):
        np.testing.assert_array_equal(np.asarray(names[f"direction.{k}"].data), v.directions[k].numpy())


def test_gguf_export_refuses_layer_zero(tmp_path):
    v = SteeringVector(directions={0: torch.ones(4)})
    with pytest.raises(SteerhealError, match="layer 0"):
        v.to_gguf(tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()


def test_arithmetic_is_layerwise_and_never_mutates_operands():
    a = make_vector()
    b = SteeringVector(directions={3: torch.ones(64), 1: torch.ones(64)})
    before = {k: t.clone() for k, t in a.directions.items()}
    s = a + b
    assert s.layers == [1, 2, 3]
    assert torch.equal(s.directions[3], a.directions[3] + 1)
    assert torch.equal(s.directions[1], torch.ones(64))
    assert torch.equal((a - a).directions[2], torch.zeros(64))
    assert torch.equal((2 * a).directions[2], a.directions[2] * 2)
    assert torch.equal((a * 0.5).directions[3], a.directions[3] * 0.5)
    assert all(torch.equal(before[k], a.directions[k]) for k in before)
    assert s.coeff is None


def test_arithmetic_requires_additive_vectors_of_one_size():
    a = make_vector()
    with pytest.raises(SteerhealError, match="additive"):
        SteeringVector(directions={1: torch.ones(64)}, operation="project") + a
    with pytest.raises(SteerhealError, match="size"):
        a + SteeringVector(directions={1: torch.ones(32)})


def test_loading_a_non_vector_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SteerhealError, match="not a readable"):
        SteeringVector.load(bad)
    with pytest.raises(SteerhealError, match="does not exist"):
        SteeringVector.load(tmp_path / "missing.safetensors")


def test_vector_for_another_model_or_size_is_rejected(tiny_llama, tiny_gemma):
    v = SteeringVector(directions={1: torch.ones(64)}, model_spec="tiny-random-llama",
                       model_revision=tiny_llama.revision)
    v.check_compatible(tiny_llama)
    with pytest.raises(SteerhealError, match="extracted from"):
        v.check_compatible(tiny_gemma)
    v.check_compatible(tiny_gemma, allow_other_model=True)
    with pytest.raises(SteerhealError, match="hidden size"):
        SteeringVector(directions={1: torch.ones(32)}).check_compatible(tiny_llama)
    with pytest.raises(SteerhealError, match="do not exist"):
        SteeringVector(directions={9: torch.ones(64)}).check_compatible(tiny_llama)
