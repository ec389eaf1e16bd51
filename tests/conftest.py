import os

# The interpreter flag must be set before anything imports triton. Model-level tests run the
# PyTorch kernel path (fast on CPU); kernel tests opt into Triton with the `triton_backend` fixture.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTFT_KERNEL_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "triton")


@pytest.fixture
def torch_backend(monkeypatch):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "torch")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A saved 2-layer random Llama with a BPE tokenizer trained on the Korean sample (Llama-3 chat tokens)."""
    from tests.factories import tiny_llama_checkpoint

    return tiny_llama_checkpoint(tmp_path_factory.mktemp("tiny_llama"))
