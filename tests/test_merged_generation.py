"""Generation inside a training run decodes from a merged view of LoRA and the trained token rows: it gives the
tokens `fastft eval --adapter` gives for the same adapter, and leaving the view gives training back its very
weights, so training after a generation goes on bit-identically. Run on a tiny Gemma 3 (tied head) with
lora.train_tokens and LoRA dropout on, the default recipe's setup."""
import pytest
import torch
from transformers import TrainerCallback

from fastft.config.loader import load_recipe
from fastft.data.pipeline import build_encoder
from fastft.evaluation.evaluate import eval_examples
from fastft.evaluation.generate import generate_texts, load_for_inference
from fastft.models.merged_view import merged_view
from tests.factories import fastft_trainer, recipe_for
from tests.test_train_tokens import TRAIN_TOKENS, embedding_rows, tiny_gemma3_checkpoint

SETTINGS = ["dataset.max_train_samples=12", "lora.dropout=0.05", "generation.max_new_tokens=12", TRAIN_TOKENS]
quiet = lambda *_: None  # noqa: E731


def trainable(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def tuner_layers(model) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert any(type(m).__name__ == "TrainableTokensLayer" for m in layers)
    return layers


def generate(recipe, recipe_file, model, tokenizer) -> list[str]:
    examples = eval_examples(recipe.dataset, recipe_file, 4)
    return generate_texts(model, tokenizer, build_encoder(recipe.dataset, tokenizer), examples, recipe.generation)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("merged_generation")
    model_dir = tiny_gemma3_checkpoint(tiny_llama, root / "gemma3")
    return recipe_for(root, model_dir), root


@pytest.fixture(scope="module")
def trained(setup):
    """(recipe, recipe file, trained PEFT model in eval mode, its tokenizer, its adapter folder) after 3 steps."""
    recipe_file, root = setup
    recipe = load_recipe(recipe_file, ["training.max_steps=3", *SETTINGS])
    trainer, loaded = fastft_trainer(recipe, root / "checkpoints")
    trainer.train()
    adapter = root / "adapter"
    trainer.save_model(str(adapter))
    loaded.tokenizer.save_pretrained(adapter)
    return recipe, recipe_file, loaded.model.eval(), loaded.tokenizer, adapter


def test_the_view_computes_the_merged_model_and_gives_back_the_same_tensors(trained):
    _, _, model, _, _ = trained
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}
    table = next(m for m in tuner_layers(model) if type(m).__name__ == "TrainableTokensLayer").get_base_layer().weight
    before_table = table.data_ptr()
    unmerged = embedding_rows(model)
    with merged_view(model):
        assert torch.equal(embedding_rows(model), unmerged)  # the trained rows are in the embedding itself now
        assert table.data_ptr() == before_table  # written into the table in place: no copy of the whole table
        assert all(layer.merged for layer in tuner_layers(model))
    for name, p in model.named_parameters():
        assert p.data_ptr() == before[name][0], name
        assert torch.equal(p, before[name][1]), name
    assert not any(layer.merged for layer in tuner_layers(model))


def test_in_training_generation_equals_fastft_eval_of_the_adapter(trained):
    recipe, recipe_file, model, tokenizer, adapter = trained
    with merged_view(model):
        during_training = generate(recipe, recipe_file, model, tokenizer)
    reloaded, reloaded_tokenizer = load_for_inference(recipe, adapter, quiet)
    assert during_training == generate(recipe, recipe_file, reloaded, reloaded_tokenizer)
    assert any(during_training)


class GenerateAtStep(TrainerCallback):
    """Generates from the merged view at the end of one step, as EpochGeneration does at an evaluation."""

    def __init__(self, step, generate_now):
        self.step, self.generate_now = step, generate_now

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            model.eval()
            with merged_view(model):
                self.generate_now(model)
            model.train()


def test_training_after_a_merged_generation_continues_bit_identically(setup):
    recipe_file, root = setup
    recipe = load_recipe(recipe_file, ["training.max_steps=4", *SETTINGS])
    plain, _ = fastft_trainer(recipe, root / "plain")
    plain.train()
    generating, loaded = fastft_trainer(recipe, root / "generating")
    produced = []
    generating.add_callback(GenerateAtStep(2, lambda m: produced.append(generate(recipe, recipe_file, m, loaded.tokenizer))))
    generating.train()
    assert produced  # the generation really ran in the middle of training
    expected, got = trainable(plain.model), trainable(generating.model)
    assert expected.keys() == got.keys() and len(got) > 0
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
