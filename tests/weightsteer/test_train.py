import pytest
import torch

from steerheal import data
from steerheal.config import WeightSteerConfig
from steerheal.errors import SteerhealError
from steerheal.generate import Completion
from steerheal.models import load_model
from steerheal.weightsteer.kinds import KINDS, parse_kinds, skipped_kinds, unavailable_reason
from steerheal.weightsteer.train import fit_adapter, persona_samples, train_delta, training_examples

CFG = WeightSteerConfig(n_prompts=6, max_new_tokens=12, epochs=2, batch_size=3, lr=5e-3, rank=4, filter=False)


def load():
    return load_model("tiny-random-llama", "cpu", torch.float32)


@pytest.fixture(scope="module")
def samples():
    lm = load()
    return persona_samples(lm, data.persona_pair("care-over-authority"), data.contexts()[:CFG.n_prompts], CFG)


def lora_product(model) -> dict[str, torch.Tensor]:
    """scaling * B @ A for every LoRA layer, read straight from the adapter's factors (fp64)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            a = layer.lora_A["default"].weight.double()
            b = layer.lora_B["default"].weight.double()
            out[name.removeprefix("base_model.model.") + ".weight"] = layer.scaling["default"] * (b @ a)
    return out


def test_samples_share_prompts_and_training_strips_the_system_prompt(samples):
    lm = load()
    pos, neg = samples["pos"], samples["neg"]
    assert [r.prompt for r in pos] == [r.prompt for r in neg]
    pair = data.persona_pair("care-over-authority")
    assert pos[0].system == pair.pos and neg[0].system == pair.neg
    ex = training_examples(lm, pos, CFG.max_len)[0]
    prompt_text = lm.tokenizer.decode(ex.input_ids[:ex.n_prompt])
    assert pair.pos not in prompt_text and pos[0].prompt in prompt_text
    assert ex.input_ids[ex.n_prompt:ex.n_prompt + len(pos[0].token_ids)] == pos[0].token_ids


def test_lora_dW_equals_difference_of_factor_products(samples):
    delta, sides = train_delta(load, "lora", samples, CFG, info={"model": "tiny-random-llama"})
    assert all(s.losses[-1] < s.losses[0] for s in sides)  # both adapters learned something
    products = {}
    for side in ("pos", "neg"):
        model, _ = fit_adapter(load(), "lora", side, samples[side], CFG)  # independent re-training
        products[side] = lora_product(model)
    assert set(products["pos"]) == set(delta.names)
    for name in delta.names:
        expected = (products["pos"][name] - products["neg"][name]).float()
        assert torch.allclose(delta.dense(name), expected, atol=1e-6, rtol=1e-4), name
    assert delta.factors  # rank <= 2r: stored as factors


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "lora"])
def test_every_adapter_type_trains_and_changes_the_weights(kind, samples):
    delta, sides = train_delta(load, kind, samples, CFG, info={"model": "tiny-random-llama"})
    assert delta.kind == kind and delta.names and delta.norm() > 0
    assert all(len(s.losses) == 2 * 2 and s.n_trainable > 0 for s in sides)
    if kind == "ia3":  # IA3 scales k, v and down_proj only
        assert all(n.split(".")[-2] in ("k_proj", "v_proj", "down_proj") for n in delta.names)


def test_same_data_on_both_sides_gives_zero_dW(samples):
    same = {"pos": samples["pos"], "neg": samples["pos"]}
    delta, _ = train_delta(load, "pissa", same, CFG, info={"model": "tiny-random-llama"})
    # PiSSA rewrites the base at init; identical training makes both changes identical.
    assert max(float(delta.dense(n).abs().max()) for n in delta.names) == 0.0


def test_unknown_or_missing_adapter_types_are_clear_errors(monkeypatch):
    assert parse_kinds("all") == list(KINDS)
    assert parse_kinds("lora, ia3,lora") == ["lora", "ia3"]
    with pytest.raises(SteerhealError, match="unknown adapter type 'vera2'"):
        parse_kinds("lora,vera2")
    import peft

    monkeypatch.delattr(peft, "DeloraConfig")
    assert "has no DeloraConfig" in unavailable_reason("delora")
    assert parse_kinds("all") == [k for k in KINDS if k != "delora"]  # 'all' skips it, with a reason
    assert set(skipped_kinds()) == {"delora"}
    with pytest.raises(SteerhealError, match="has no DeloraConfig"):
        parse_kinds("delora")


def test_zero_samples_is_a_clear_error():
    with pytest.raises(SteerhealError, match="no pos samples left"):
        fit_adapter(load(), "lora", "pos", [], CFG)


def test_config_rejects_out_of_range_values():
    with pytest.raises(SteerhealError, match="lr must be > 0"):
        WeightSteerConfig(lr=0)
    with pytest.raises(SteerhealError, match="layer_band"):
        WeightSteerConfig(layer_band=(0.8, 0.2))
    assert WeightSteerConfig().lr_for("ia3") == 10 * WeightSteerConfig().lr_for("lora")


def test_completion_record_round_trip_keeps_training_tokens():
    rec = Completion(prompt="hi", completion="x", token_ids=[1, 2], system="s")
    assert Completion(**rec.to_dict()) == rec
