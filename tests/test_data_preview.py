"""`fastft preview`: every shipped recipe previews on its family's real tokenizer, without loading model weights."""
import re

import pytest
import transformers
from click.testing import CliRunner

from fastft.cli import main
from fastft.commands.preview import MASKED_STYLE, TRAINED_STYLE, masked_text
from fastft.data.encode import Encoder, EncodeStats
from fastft.data.render import Renderer
from fastft.data.tasks import Example, Turn
from tests.factories import REPO
from tests.tokenizers import real_tokenizer

RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml"))


def family_of(recipe_text: str) -> str:
    name = re.search(r"^\s+name:\s*(\S+)", recipe_text, re.M).group(1).lower()
    return next(family for key, family in (("llama", "llama3"), ("qwen", "qwen"), ("gemma", "gemma3")) if key in name)


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    """A saved tokenizer folder per family; Gemma's is the converted embedded checkpoint (converted now, before
    the test forbids loading weights)."""
    from fastft.models.embedded import resolve_embedded

    dirs = {"gemma3": resolve_embedded("embedded:gemma3-270m")}
    for family in ("llama3", "qwen"):
        dirs[family] = tmp_path_factory.mktemp(family)
        real_tokenizer(family).save_pretrained(dirs[family])
    return dirs


@pytest.fixture
def no_weights(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("preview loaded model weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", refuse)


def test_masked_text_styles_exactly_the_trained_runs():
    tokenizer = real_tokenizer("llama3")
    example = Example("c", None, "", "둘째 답", history=(Turn("user", "질문 하나"), Turn("assistant", "첫 답"), Turn("user", "질문 둘")))
    record = Encoder(Renderer(tokenizer, "chat"), 1024, 200).encode(example, EncodeStats())
    text = masked_text(tokenizer, record)
    assert text.plain == tokenizer.decode(record["input_ids"])
    runs = [(text.plain[s.start:s.end], s.style) for s in text.spans]
    assert [run for run, style in runs if style == TRAINED_STYLE] == ["첫 답<|eot_id|>", "둘째 답<|eot_id|>"]
    assert {style for _, style in runs} == {TRAINED_STYLE, MASKED_STYLE} and "".join(run for run, _ in runs) == text.plain


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_preview_every_shipped_recipe(recipe, tokenizer_dirs, no_weights):
    model_dir = tokenizer_dirs[family_of(recipe.read_text(encoding="utf-8"))]
    result = CliRunner().invoke(main, ["preview", str(recipe), "-n", "2", "--set", f"model.name={model_dir}"])
    assert result.exit_code == 0, result.output
    shown = re.findall(r"(\S+): (\d+) tokens, (\d+) trained", result.output)
    assert len(shown) == 2 and all(int(trained) > 0 for _, _, trained in shown)
    assert "whole data set" in result.output and re.search(r"examples\s+│\s+\d+\s+│\s+\d+", result.output)
