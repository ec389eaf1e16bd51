"""lora.train_tokens: the embedding rows of chosen existing tokens train (a tied head with them), every other row
stays bit-identical, and the adapter alone carries them into fastft's inference loader and `fastft merge`.
Run on the untied tiny Llama and on a tiny Gemma 3 (tied, scaled embeddings), the family the option is for."""
import pytest
import torch
from click.testing import CliRunner

from fastft.cli import main
from fastft.commands.merge import merge_adapter
from fastft.config.loader import load_recipe
from fastft.errors import FastftError
from fastft.evaluation.generate import load_for_inference
from fastft.models.resolve import resolve_model
from fastft.training.build import build_model
from tests.factories import fastft_trainer, recipe_for, tiny_bpe_tokenizer, tiny_llama_checkpoint
from tests.test_merge import dense, logits, relative_error

TRAINED = ["<|eot_id|>", "<|start_header_id|>"]  # both occur in every training example (turn markers)
TRAIN_TOKENS = f"lora.train_tokens=['{TRAINED[0]}', '{TRAINED[1]}']"
PROMPT = "<|start_header_id|>user<|end_header_id|>\n\n#Person1#은 우산을 찾으러 왔다.<|eot_id|><|start_header_id|>assistant"
quiet = lambda *_: None  # noqa: E731


def tiny_gemma3_checkpoint(tokenizer_dir, folder):
    """A 2-layer randomly initialised Gemma 3 (tied head, embeddings scaled by sqrt(hidden)) with the tiny Llama's
    tokenizer, saved like the factory's checkpoints."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    assert config.tie_word_embeddings
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama-untied", "gemma3-tied"])
def run(request, tmp_path_factory, tiny_llama):
    """(model folder, trained PEFT model, adapter folder, ids of TRAINED, prompt ids) after 3 steps, saved as
    `fastft run` saves a run without added chat tokens: trainer.save_model, then the tokenizer."""
    root = tmp_path_factory.mktemp(request.param)
    model_dir = tiny_llama if request.param == "llama-untied" else tiny_gemma3_checkpoint(tiny_llama, root / "gemma3")
    recipe = load_recipe(recipe_for(root, model_dir), [
        "training.max_steps=3", "dataset.max_train_samples=12", "lora.dropout=0.0", TRAIN_TOKENS])
    trainer, loaded = fastft_trainer(recipe, root / "checkpoints")
    trainer.train()
    adapter = root / "outputs" / "tiny" / "final_model"
    trainer.save_model(str(adapter))
    loaded.tokenizer.save_pretrained(adapter)
    ids = loaded.tokenizer.convert_tokens_to_ids(TRAINED)
    prompt = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    assert set(ids) <= set(prompt[0].tolist())
    return model_dir, loaded.model.eval(), adapter, ids, prompt


@torch.no_grad()
def embedding_rows(model) -> torch.Tensor:
    """Every token's input embedding as the model's forward computes it (PEFT's trainable tokens swap their rows in
    there; Gemma scales them)."""
    return model.get_input_embeddings()(torch.arange(model.config.vocab_size))


@torch.no_grad()
def head_rows(model) -> torch.Tensor:
    """The LM head's effective weight, [vocab, hidden], read through its forward."""
    return model.get_output_embeddings()(torch.eye(model.config.hidden_size)).T


def changed_rows(after, before) -> list[int]:
    return [i for i in range(len(before)) if not torch.equal(after[i], before[i])]


def test_only_the_chosen_rows_train(run):
    model_dir, trained, _, ids, _ = run
    base = dense(model_dir)
    assert changed_rows(embedding_rows(trained), embedding_rows(base)) == sorted(ids)
    # A tied head reads the same trained rows; an untied one is left as it is.
    assert changed_rows(head_rows(trained), head_rows(base)) == (sorted(ids) if base.config.tie_word_embeddings else [])


def test_adapter_carries_the_rows_not_the_embedding(run):
    from safetensors import safe_open

    _, trained, adapter, ids, _ = run
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    rows = [shape for name, shape in shapes.items() if "trainable_tokens_delta" in name]
    assert rows == [(len(ids), trained.config.hidden_size)]
    assert not any(shape[0] == trained.config.vocab_size for shape in shapes.values())


def test_inference_loader_restores_the_trained_rows(run, tmp_path):
    model_dir, trained, adapter, _, prompt = run
    reloaded, _ = load_for_inference(load_recipe(recipe_for(tmp_path, model_dir), [TRAIN_TOKENS]), adapter, quiet)
    assert torch.equal(embedding_rows(reloaded), embedding_rows(trained))
    expected = logits(trained, prompt)
    assert relative_error(logits(reloaded, prompt), expected) <= 1e-5
    assert relative_error(logits(dense(model_dir), prompt), expected) > 1e-2  # the adapter really changes the model


def test_merged_model_holds_the_trained_rows(run, tmp_path):
    _, trained, adapter, _, prompt = run
    merged = dense(merge_adapter(adapter, tmp_path / "merged", dtype="float32"))
    assert torch.equal(embedding_rows(merged), embedding_rows(trained))
    assert relative_error(logits(merged, prompt), logits(trained, prompt)) <= 1e-5


def test_train_tokens_join_added_chat_tokens_once(tmp_path):
    """A tokenizer without chat markers gets ChatML's; naming one of them again trains its row once."""
    model_dir = tiny_llama_checkpoint(tmp_path / "plain", tiny_bpe_tokenizer(specials=["<s>", "</s>"]))
    recipe_file = recipe_for(tmp_path, model_dir)
    resolved = resolve_model(load_recipe(recipe_file, ["lora.train_tokens=['<|im_end|>', '</s>', '<|im_end|>']"]), quiet)
    loaded = build_model(resolved)
    expected = resolved.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "</s>"])
    assert loaded.model.peft_config["default"].trainable_token_indices == {"embed_tokens": expected}


def test_a_string_that_is_not_one_token_is_refused_before_anything_is_written(tmp_path, tiny_llama):
    recipe_file = recipe_for(tmp_path, tiny_llama)
    with pytest.raises(FastftError) as error:
        resolve_model(load_recipe(recipe_file, ["lora.train_tokens=['<|eot_id|>', '<|eot_id |>']"]), quiet)
    assert str(error.value).startswith("lora.train_tokens: '<|eot_id |>' is not a single token of the tokenizer")
    assert "fix: name a single token of the tokenizer" in str(error.value)
    assert "closest: '<|eot_id|>'" in str(error.value)

    result = CliRunner().invoke(main, ["run", str(recipe_file), "--set", "lora.train_tokens=[end of turn]"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'end of turn' is not a single token of the tokenizer (it splits into" in result.output
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "logs").exists()
