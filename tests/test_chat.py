import pytest
import torch

from steerheal.chat import encode, messages_for, render_prompt, supports_system_role
from steerheal.errors import SteerhealError


def test_persona_goes_in_system_role_when_the_template_has_one(tiny_llama):
    assert supports_system_role(tiny_llama.tokenizer)
    text = render_prompt(tiny_llama.tokenizer, "hello", "You are kind.")
    assert text.startswith("<|im_start|>system\nYou are kind.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_persona_is_folded_into_the_user_turn_without_a_system_role(tiny_gemma):
    assert not supports_system_role(tiny_gemma.tokenizer)
    msgs = messages_for("hello", "You are kind.", tiny_gemma.tokenizer)
    assert msgs == [{"role": "user", "content": "You are kind.\n\nhello"}]
    text = render_prompt(tiny_gemma.tokenizer, "hello", "You are kind.")
    assert text.endswith("<start_of_turn>model\n") and "You are kind.\n\nhello" in text


def test_read_position_is_the_last_token_of_the_generation_tag(tiny_llama):
    tok = tiny_llama.tokenizer
    batch = encode(tok, [render_prompt(tok, "hi"), render_prompt(tok, "a much longer message")], 512)
    # The byte tokenizer has one token per byte, so the tag's text is the last 10 tokens.
    assert tok.decode(batch.input_ids[0, -len("assistant\n"):]) == "assistant\n"
    assert torch.equal(batch.input_ids[:, -1], batch.input_ids[1, -1].expand(2))


def test_left_padding_gets_position_ids_from_the_mask(tiny_llama):
    tok = tiny_llama.tokenizer
    batch = encode(tok, ["ab", "abcde"], 64)
    assert batch.attention_mask[0].tolist() == [0, 0, 0, 1, 1]
    assert batch.position_ids[0].tolist() == [0, 0, 0, 0, 1]
    assert batch.position_ids[1].tolist() == [0, 1, 2, 3, 4]


def test_prompt_over_the_length_limit_is_an_error_not_a_truncation(tiny_llama):
    with pytest.raises(SteerhealError, match="never truncated"):
        encode(tiny_llama.tokenizer, ["x" * 100], 50)


def test_missing_chat_template_is_a_clear_error(tiny_llama):
    tok = tiny_llama.tokenizer
    saved = tok.chat_template
    tok.chat_template = None
    try:
        with pytest.raises(SteerhealError, match="no chat template"):
            render_prompt(tok, "hi")
    finally:
        tok.chat_template = saved
