"""training.gradient_checkpointing: selective: the fused MLP blocks recompute gate and up in backward instead of
keeping them. Same loss and gradients as without it (bit for bit) and as transformers + PEFT unpatched (the patch
parity tests' tolerances); 2 x [tokens, intermediate] fewer saved bytes per block, counted with saved_tensors_hooks;
the recipe key's values and refusals; a short training run through fastft's own build path."""
import pytest
import torch

from fastft.config.loader import RecipeError, load_recipe
from fastft.errors import FastftError
from fastft.patching import apply_kernels
from fastft.patching.checkpointing import check_selective
from fastft.patching.loss import prompt_masked_loss
from fastft.patching.mlp import recomputing_blocks
from tests.factories import fastft_trainer, recipe_for
from tests.kernels.numerics import assert_rel_close
from tests.saved_tensors import saved_storage_bytes
from tests.test_patch_models import lora_grads, prompt_masked_batch, tiny_config, tiny_peft

FAMILIES = ["llama", "gemma3"]


def loss_and_grads(model, batch, seed: int = 3):
    torch.manual_seed(seed)  # LoRA dropout draws its masks' seeds from the default generator
    model.zero_grad()
    loss = prompt_masked_loss(model, batch)
    loss.backward()
    return loss.detach(), lora_grads(model)


def patched(family, checkpointing, dropout=0.0):
    model = tiny_peft(family, dropout=dropout)
    report = apply_kernels(model, checkpointing=checkpointing)
    return model, report


@pytest.mark.parametrize("backend", ["torch_backend", "triton_backend"])
@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("family", FAMILIES)
def test_selective_gives_the_same_loss_and_gradients_bit_for_bit(family, dropout, backend, request):
    request.getfixturevalue(backend)
    batch = prompt_masked_batch(batch=2, length=9, prompt=5)
    keeping, _ = patched(family, False, dropout)
    selective, report = patched(family, "selective", dropout)
    assert recomputing_blocks(selective) == 2 and recomputing_blocks(keeping) == 0
    assert any("recomputes gate and up in backward in 2 MLP blocks" in line for line in report.lines())
    ref_loss, ref_grads = loss_and_grads(keeping, batch)
    loss, grads = loss_and_grads(selective, batch)
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name


@pytest.mark.parametrize("family", FAMILIES)
def test_selective_matches_unpatched_transformers_and_peft(family):
    """As tests/test_patch_parity.py: loss to 1e-5, gradients to 1e-4 relative (fp32, the PyTorch kernel path)."""
    model, batch = tiny_peft(family), prompt_masked_batch()
    ref_loss, ref_grads = loss_and_grads(model, batch)
    apply_kernels(model, checkpointing="selective")
    assert recomputing_blocks(model) == 2
    loss, grads = loss_and_grads(model, batch)
    assert_rel_close(loss, ref_loss, tol=1e-5, name="loss")
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert_rel_close(grad, ref_grads[name], tol=1e-4, name=name)


def saved_bytes(model, batch) -> int:
    """Bytes of the distinct storages autograd keeps for backward during the forward, parameters left out."""
    return saved_storage_bytes(lambda: prompt_masked_loss(model, batch), model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_selective_keeps_neither_gate_nor_up(family):
    batch = prompt_masked_batch()
    keeping, selective = patched(family, False)[0], patched(family, "selective")[0]
    config = tiny_config(family)
    tokens = batch["input_ids"].numel()
    gate_and_up = config.num_hidden_layers * 2 * tokens * config.intermediate_size * 4  # fp32
    assert saved_bytes(keeping, batch) - saved_bytes(selective, batch) == gate_and_up


def test_selective_in_an_unpatched_architecture_says_nothing_is_recomputed():
    model = tiny_peft("llama")
    report = apply_kernels(model, {"mlp": False}, checkpointing="selective")
    assert recomputing_blocks(model) == 0
    assert any("nothing is recomputed: memory as with gradient_checkpointing: false" in line
               for line in report.lines())


@pytest.fixture
def recipe_file(tmp_path, tiny_llama):
    return recipe_for(tmp_path, tiny_llama)


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("selective", "selective")])
def test_recipe_takes_true_false_and_selective(recipe_file, value, expected):
    recipe = load_recipe(recipe_file, [f"training.gradient_checkpointing={value}"])
    assert recipe.training.gradient_checkpointing == expected


@pytest.mark.parametrize("value", ["partial", "Selective", "1", "[selective]"])
def test_recipe_refuses_other_values_in_one_line(recipe_file, value):
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_file, [f"training.gradient_checkpointing={value}"])
    message = str(caught.value)
    assert message.startswith("the recipe has 1 problem(s):") and \
        "training.gradient_checkpointing: must be true, false or selective" in message, message


def test_selective_with_kernels_mlp_off_is_refused_before_loading(recipe_file, tmp_path):
    recipe = load_recipe(recipe_file, ["training.gradient_checkpointing=selective", "kernels.mlp=false"])
    with pytest.raises(FastftError) as caught:
        fastft_trainer(recipe, tmp_path / "checkpoints")
    assert str(caught.value) == (
        "training.gradient_checkpointing: selective recomputes inside fastft's fused MLP kernel, and kernels.mlp is "
        "false\n  fix: set kernels.mlp: true, or gradient_checkpointing: true (whole layers) or false")


def test_selective_with_the_unsloth_backend_is_refused(recipe_file):
    """build_model calls check_selective with the selected backend before loading (Unsloth itself needs a GPU)."""
    recipe = load_recipe(recipe_file, ["training.gradient_checkpointing=selective"])
    with pytest.raises(FastftError, match="Unsloth's models run their own MLP code") as caught:
        check_selective(recipe, "unsloth")
    assert caught.value.where == "training.gradient_checkpointing" and "model.backend: hf" in caught.value.hint
    check_selective(recipe, "hf")  # no error


def trained(recipe_file, out, mode):
    recipe = load_recipe(recipe_file, ["training.max_steps=2", "training.eval_before_training=false",
                                       f"training.gradient_checkpointing={mode}"])
    trainer, loaded = fastft_trainer(recipe, out)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    weights = {name: p.detach().clone() for name, p in loaded.model.named_parameters() if p.requires_grad}
    return trainer, loaded, losses, weights


def test_two_training_steps_in_selective_mode_equal_the_plain_run(recipe_file, tmp_path):
    """Through fastft's build path (recipe -> build_trainer -> Trainer.train), LoRA dropout on: transformers'
    checkpointing stays off, every MLP block recomputes, and losses and trained weights equal the run without."""
    trainer, loaded, losses, weights = trained(recipe_file, tmp_path / "selective", "selective")
    assert not trainer.args.gradient_checkpointing and recomputing_blocks(loaded.model) == 2
    assert any("selective checkpointing" in line for line in loaded.kernels.lines())
    _, _, plain_losses, plain_weights = trained(recipe_file, tmp_path / "plain", "false")
    assert losses and losses == plain_losses
    assert weights.keys() == plain_weights.keys()
    for name, weight in weights.items():
        assert torch.equal(weight, plain_weights[name]), name


def test_memory_estimate_puts_selective_between_full_checkpointing_and_none(recipe_file):
    """The pre-flight estimate (models/footprint.py): selective keeps less than false (no gate, up, activation,
    product or down input per MLP block) and more than true (every layer's whole set but one)."""
    from fastft.models.footprint import estimate, meta_model
    from fastft.models.resolve import resolve_model

    activations = {}
    for mode in ("false", "selective", "true"):
        resolved = resolve_model(load_recipe(recipe_file, [f"training.gradient_checkpointing={mode}"]), lambda *_: None)
        model = meta_model(resolved.config, False)
        activations[mode] = estimate(model, resolved.recipe, "adamw_torch", 256, 64, False).activations
    assert activations["true"] < activations["selective"] < activations["false"]
