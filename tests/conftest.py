import os

import pytest
import torch

from steerheal import data
from steerheal.models import load_model

os.environ.setdefault("STEERHEAL_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def tiny_llama():
    """A seeded random Llama with a ChatML byte tokenizer, fp32 on CPU."""
    return load_model("tiny-random-llama", "cpu", torch.float32)


@pytest.fixture(scope="session")
def tiny_gemma():
    """A seeded random Gemma 3 whose template has no system role, fp32 on CPU."""
    return load_model("tiny-random-gemma3", "cpu", torch.float32)


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct in the default dtype (bf16 on a bf16 CPU)."""
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def love_pair():
    return data.persona_pair("love-humanity")


@pytest.fixture(scope="session")
def contexts():
    return data.contexts()


@pytest.fixture(scope="session")
def heldout():
    return data.heldout_prompts()


@pytest.fixture(scope="session")
def smollm_fp32():
    """The embedded model in fp32, for tests with tight numeric tolerances."""
    return load_model("smollm2-135m", "cpu", torch.float32)
