"""model.backend selection and the Unsloth refusal, on CPU.

unsloth is not installed here and there is no GPU, so the two facts selection depends on (torch.cuda /
torch.xpu availability and importlib's find_spec) are patched; they are inputs, not the thing under test.
"""
import importlib.util
import sys
import types

import pytest
import torch

from fastft.config.schema import SEVEN_PROJECTIONS, Recipe
from fastft.errors import FastftError
from fastft.models.unsloth_backend import load_with_unsloth, select_backend

REAL_FIND_SPEC = importlib.util.find_spec


def recipe(backend="unsloth", **model):
    return Recipe(experiment="t", model={"name": "some/model", "backend": backend, **model},
                  dataset={"train": "train.csv"})


@pytest.fixture
def machine(monkeypatch):
    """machine(cuda=..., xpu=..., unsloth=...) sets what this process sees."""
    def set_up(cuda=False, xpu=False, unsloth=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch, "xpu", types.SimpleNamespace(is_available=lambda: xpu), raising=False)
        fake_spec = object() if unsloth else None
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: fake_spec if name == "unsloth" else REAL_FIND_SPEC(name, *a))
    return set_up


@pytest.mark.parametrize("cuda, unsloth, expected", [
    (False, False, "hf"), (False, True, "hf"), (True, False, "hf"), (True, True, "unsloth"),
])
def test_auto_takes_unsloth_only_with_cuda_and_the_package(machine, cuda, unsloth, expected):
    machine(cuda=cuda, unsloth=unsloth)
    assert select_backend(recipe("auto").model) == expected


def test_hf_is_hf_even_where_unsloth_would_run(machine):
    machine(cuda=True, unsloth=True)
    assert select_backend(recipe("hf").model) == "hf"


@pytest.mark.parametrize("gpu", ["cuda", "xpu"])
def test_unsloth_with_a_gpu_and_the_package(machine, gpu):
    machine(**{gpu: True}, unsloth=True)
    assert select_backend(recipe().model) == "unsloth"


def test_unsloth_without_a_gpu_is_one_clear_error(machine):
    machine(unsloth=True)
    with pytest.raises(FastftError) as caught:
        select_backend(recipe().model)
    assert str(caught.value) == (
        "model.backend: Unsloth needs an NVIDIA/AMD/Intel GPU and this machine has none\n  fix: use model.backend: hf"
    )
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_unsloth_without_the_package_says_how_to_get_it(machine):
    machine(cuda=True)
    with pytest.raises(FastftError, match=r"not installed[\s\S]*pip install 'fastft\[unsloth\]'"):
        select_backend(recipe().model)


def test_loading_on_cpu_refuses_before_importing_unsloth(machine):
    machine(unsloth=True)
    with pytest.raises(FastftError, match="needs an NVIDIA/AMD/Intel GPU"):
        load_with_unsloth(recipe())


def test_recipe_reaches_fast_language_model(machine, monkeypatch):
    """The glue's mapping of recipe fields to Unsloth's keyword arguments, against a stand-in FastLanguageModel."""
    calls = {}

    class FakeFastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls["load"] = kwargs
            return "model", "tokenizer"

        @staticmethod
        def get_peft_model(model, **kwargs):
            calls["lora"] = kwargs
            return f"peft({model})"

    machine(cuda=True, unsloth=True)
    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FakeFastLanguageModel))
    r = recipe(quantization="nf4", dtype="bfloat16")
    r.lora.target_modules = "all-linear"
    assert load_with_unsloth(r, "/ckpt") == ("peft(model)", "tokenizer")
    assert calls["load"] == dict(model_name="/ckpt", max_seq_length=1224, dtype=torch.bfloat16, load_in_4bit=True,
                                 trust_remote_code=False)
    assert calls["lora"] == dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=SEVEN_PROJECTIONS, bias="none",
                                 use_gradient_checkpointing="unsloth", random_state=42)
