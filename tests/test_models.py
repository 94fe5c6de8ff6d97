import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from steerheal.errors import SteerhealError
from steerheal.models import decoder_blocks, load_model, pick_device, pick_dtype


def test_tiny_models_expose_their_decoder_blocks(tiny_llama, tiny_gemma):
    for lm in (tiny_llama, tiny_gemma):
        assert lm.n_layers == 4 and lm.d_model == 64
        assert len(decoder_blocks(lm.model)) == 4


def test_tiny_models_are_seeded():
    a = load_model("tiny-random-llama", "cpu", torch.float32, seed=3)
    b = load_model("tiny-random-llama", "cpu", torch.float32, seed=3)
    c = load_model("tiny-random-llama", "cpu", torch.float32, seed=4)
    wa, wb, wc = (m.model.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.revision == b.revision != c.revision


def test_unknown_spec_is_a_clear_error():
    with pytest.raises(SteerhealError, match="unknown model spec"):
        load_model("definitely not a model")


def test_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(SteerhealError, match="does not exist"):
        load_model(str(tmp_path / "nope.gguf"))


def test_unsupported_architecture_names_the_model_class():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(SteerhealError, match="GPT2LMHeadModel"):
        decoder_blocks(model)


def test_dtype_override_and_unknown_dtype():
    assert pick_dtype(torch.device("cpu"), "float32") is torch.float32
    with pytest.raises(SteerhealError, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "float8")


def test_embedded_model_loads_dequantised_with_chat_template(smollm):
    assert smollm.n_layers == 30 and smollm.d_model == 576
    assert getattr(smollm.model, "hf_quantizer", None) is None
    assert getattr(smollm.model.config, "quantization_config", None) is None
    assert "<|im_start|>assistant" in smollm.tokenizer.chat_template
    assert smollm.revision == "b179c9523d0e"


def test_device_auto_uses_the_best_device_and_inputs_go_to_the_embedding():
    lm = load_model("tiny-random-llama", "auto", torch.float32)  # no GPU here: "auto" is the best single device
    assert lm.device == pick_device() == lm.model.get_input_embeddings().weight.device
    assert all(lm.block_device(k) == lm.device for k in range(lm.n_layers))
    with pytest.raises(SteerhealError, match="unknown device 'gpu0'.*cuda:N"):
        pick_device("gpu0")
