"""Tiny random models built in-process for tests: no download, seeded, a few hundred KB.

The tokenizer is byte-level (one token per UTF-8 byte) plus the chat special tokens of the
family it imitates, so chat templating, left padding and read positions behave as in the
real models. `tiny-random-llama` imitates SmolLM2 (ChatML, pad == eos == `<|im_end|>`);
`tiny-random-gemma3` imitates Gemma 3 (no system role, `<bos>` in the template).
"""

from __future__ import annotations

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma-style: no system role at all (a system message is an error, as in some real templates).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def byte_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str, template: str):
    """A byte-level fast tokenizer: 256 byte tokens, then the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=pad, padding_side="left"
    )
    tok.chat_template = template
    return tok


def _seeded_init(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer(["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>",
                         pad="<|im_end|>", template=CHATML_TEMPLATE)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    model = _seeded_init(lambda: LlamaForCausalLM(cfg), seed)
    return model, tok


def tiny_gemma3(seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
    tok = byte_tokenizer(specials, bos="<bos>", eos="<end_of_turn>", pad="<pad>",
                         template=GEMMA_TEMPLATE)
    cfg = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
        sliding_window=16, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model = _seeded_init(lambda: Gemma3ForCausalLM(cfg), seed)
    return model, tok


TINY_MODELS = {"tiny-random-llama": tiny_llama, "tiny-random-gemma3": tiny_gemma3}
