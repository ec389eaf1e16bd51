"""kernels.frozen_bf16: in a fp32 run, bf16-exact frozen LoRA base weights and the frozen embedding table / LM head
(tied in gemma3, separate in llama) are stored in bf16 and computed in fp32. The reference is the same patched model keeping its fp32 weights: loss, LoRA gradients and the logits after an
optimizer step equal it bit for bit (keeping gate and up or recomputing them), and so do PEFT's own paths
(adapters disabled, merged, fastft's merged view). Weights that are not bf16 values stay fp32."""
import pytest
import torch

from fastft.config.loader import load_recipe
from fastft.models.merged_view import merged_view
from fastft.patching import apply_kernels
from fastft.patching.frozen_storage import store_frozen_bf16
from fastft.patching.loss import prompt_masked_loss
from tests.factories import fastft_trainer, recipe_for, tiny_llama_checkpoint
from tests.test_patch_models import lora_grads, prompt_masked_batch, tiny_peft

FAMILIES = ["llama", "gemma3"]


def bf16_valued(model):
    """Every parameter rounded to a bf16 value, kept in fp32: what a fp32 load of a bf16 checkpoint holds."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
    return model


def base_weights(model) -> dict:
    return {name: p for name, p in model.named_parameters() if name.endswith("base_layer.weight")}


def tables(model) -> list:
    """The input embedding's and the LM head's weights (one when tied)."""
    lm = model.get_base_model()
    return list({id(m.weight): m.weight for m in (lm.get_input_embeddings(), lm.get_output_embeddings())}.values())


TABLES = {"llama": 2, "gemma3": 1}


def pair(family, checkpointing=False, dropout=0.0):
    """(patched fp32 model, the same model patched with bf16 storage, the latter's report)."""
    models = [bf16_valued(tiny_peft(family, dropout=dropout)) for _ in range(2)]
    reports = [apply_kernels(model, checkpointing=checkpointing) for model in models]
    store_frozen_bf16(models[1], reports[1], torch.float32)
    return models[0], models[1], reports[1]


def step(model, batch):
    """(loss, LoRA gradients, logits after one AdamW step), LoRA dropout seeded."""
    torch.manual_seed(3)
    loss = prompt_masked_loss(model, batch)
    loss.backward()
    grads = lora_grads(model)
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return loss.detach(), grads, logits


def assert_equal_steps(reference, stored, batch):
    ref_loss, ref_grads, ref_logits = step(reference, batch)
    loss, grads, logits = step(stored, batch)
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    assert torch.equal(logits, ref_logits)


@pytest.mark.parametrize("checkpointing", [False, "selective"])
@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_storage_trains_bit_for_bit_as_fp32(family, dropout, checkpointing):
    reference, stored, report = pair(family, checkpointing, dropout)
    weights = base_weights(stored)
    assert len(weights) == 14 and all(w.dtype == torch.bfloat16 and not w.requires_grad for w in weights.values())
    assert all(isinstance(w, torch.nn.Parameter) for w in weights.values())
    assert all(w.dtype == torch.float32 for w in base_weights(reference).values())
    assert len(tables(stored)) == TABLES[family] and all(w.dtype == torch.bfloat16 for w in tables(stored))
    assert f"frozen_bf16: 14 LoRA base weights and {TABLES[family]} embedding/LM-head tables kept in bf16" in report.lines()[-1]
    assert_equal_steps(reference, stored, prompt_masked_batch())


def test_a_weight_that_is_not_a_bf16_value_stays_fp32():
    model = bf16_valued(tiny_peft("llama"))
    name, odd = next(iter(base_weights(model).items()))
    with torch.no_grad():
        odd[0, 0] += 2.0 ** -20  # below bf16's resolution at these magnitudes
    report = apply_kernels(model)
    store_frozen_bf16(model, report, torch.float32)
    assert {n: w.dtype for n, w in base_weights(model).items() if w.dtype == torch.float32} == {name: torch.float32}
    assert report.notes[-1].endswith("; 1 not bf16-exact stay fp32")
    assert "13 LoRA base weights and 2 embedding/LM-head tables kept in bf16" in report.notes[-1]


def test_fp32_weights_and_non_fp32_runs_are_left_alone():
    model = tiny_peft("gemma3")  # random fp32 weights: not bf16 values
    report = apply_kernels(model)
    store_frozen_bf16(model, report, torch.float32)
    assert all(w.dtype == torch.float32 for w in base_weights(model).values())
    assert all(w.dtype == torch.float32 for w in tables(model))
    assert report.notes[-1] == ("frozen_bf16: 0 LoRA base weights and 0 embedding/LM-head tables kept in bf16 (0.000 GiB "
                                "less), exact: computed in fp32; 15 not bf16-exact stay fp32")
    model = bf16_valued(tiny_peft("gemma3"))
    report = apply_kernels(model)
    store_frozen_bf16(model, report, torch.bfloat16)  # a bf16 run: its own dtype decides
    assert all(w.dtype == torch.float32 for w in base_weights(model).values())
    assert not any("frozen_bf16" in line for line in report.lines())


def test_only_layers_fastft_serves_are_stored():
    """With kernels.lora and kernels.mlp off, PEFT's own path reads every weight: none is stored."""
    model = bf16_valued(tiny_peft("llama"))
    report = apply_kernels(model, {"lora": False, "mlp": False})
    store_frozen_bf16(model, report, torch.float32)
    assert all(w.dtype == torch.float32 for w in base_weights(model).values())


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_own_paths_compute_as_with_fp32_weights(family):
    reference, stored, _ = pair(family)
    batch = prompt_masked_batch()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        for model in (reference, stored):
            model.eval()
        with reference.disable_adapter(), stored.disable_adapter():
            assert torch.equal(stored(**inputs).logits, reference(**inputs).logits)
        mixed = {**inputs, "adapter_names": ["default", "__base__", "default"]}  # PEFT's extra-argument path
        assert torch.equal(stored(**mixed).logits, reference(**mixed).logits)
        with merged_view(reference), merged_view(stored):
            assert all(w.dtype == torch.float32 for w in base_weights(stored).values())  # merged into fp32
            assert torch.equal(stored(**inputs).logits, reference(**inputs).logits)
        assert all(w.dtype == torch.bfloat16 for w in base_weights(stored).values())  # training's storage is back
        for model in (reference, stored):
            model.merge_adapter()
        assert torch.equal(stored(**inputs).logits, reference(**inputs).logits)
        for model in (reference, stored):
            model.unmerge_adapter()
        assert all(torch.equal(base_weights(stored)[n], w) for n, w in base_weights(reference).items())
        assert torch.equal(stored(**inputs).logits, reference(**inputs).logits)
        merged = [model.merge_and_unload() for model in (reference, stored)]
        assert torch.equal(merged[1](**inputs).logits, merged[0](**inputs).logits)


@pytest.fixture
def bf16_checkpoint(tmp_path):
    """A tiny Llama saved in bf16, as Gemma 3 270M is: a fp32 load holds bf16 values."""
    folder = tiny_llama_checkpoint(tmp_path / "fp32")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            (tmp_path / "bf16" / name).write_bytes((folder / name).read_bytes())
    return tmp_path / "bf16"


@pytest.mark.parametrize("switch", [True, False])
def test_fastft_build_stores_bf16_unless_switched_off(tmp_path, bf16_checkpoint, switch):
    recipe = load_recipe(recipe_for(tmp_path, bf16_checkpoint),
                         ["model.dtype=float32", f"kernels.frozen_bf16={str(switch).lower()}"])
    _, loaded = fastft_trainer(recipe, tmp_path / "checkpoints")
    dtypes = {w.dtype for w in base_weights(loaded.model).values()}
    assert dtypes == {torch.bfloat16 if switch else torch.float32}
    notes = [line for line in loaded.kernels.lines() if line.startswith("frozen_bf16:")]
    assert len(notes) == int(switch)


def test_a_weight_another_module_holds_stays_fp32():
    """A weight two modules hold stays fp32: the other may read it without upcasting (a LoRA'd head tied to the
    embedding); here two projections share one."""
    model = bf16_valued(tiny_peft("llama"))
    layers = model.base_model.model.model.layers
    layers[1].self_attn.q_proj.base_layer.weight = layers[0].self_attn.q_proj.base_layer.weight
    report = apply_kernels(model)
    store_frozen_bf16(model, report, torch.float32)
    kept = {n for n, w in base_weights(model).items() if w.dtype == torch.float32}
    assert kept == {"base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"}  # named once
    assert "12 LoRA base weights and 2 embedding/LM-head tables" in report.notes[-1]  # both layers holding it left out


def test_tables_stay_fp32_where_their_readers_would_not_upcast():
    """A tied table whose head the loss kernel does not read (kernels.loss off) and a table PEFT's trainable tokens
    wrap (lora.train_tokens: PEFT merges rows into it in its own dtype) stay fp32; an untied embedding alone may go."""
    model = bf16_valued(tiny_peft("gemma3"))
    report = apply_kernels(model, {"loss": False})
    store_frozen_bf16(model, report, torch.float32)
    assert [w.dtype for w in tables(model)] == [torch.float32]
    model = bf16_valued(tiny_peft("gemma3", trainable_token_indices=[3, 7]))
    report = apply_kernels(model)
    store_frozen_bf16(model, report, torch.float32)
    lm = model.get_base_model()
    assert lm.get_input_embeddings().token_adapter.get_base_layer().weight.dtype == torch.float32
    assert "and 0 embedding/LM-head tables kept in bf16" in report.notes[-1]
    model = bf16_valued(tiny_peft("llama"))
    report = apply_kernels(model, {"loss": False})
    store_frozen_bf16(model, report, torch.float32)
    lm = model.get_base_model()
    assert (lm.get_input_embeddings().weight.dtype, lm.get_output_embeddings().weight.dtype) == (torch.bfloat16,
                                                                                               torch.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_stored_tables_give_the_fp32_model_loss_gradients_and_generation(family):
    """transformers' own loss (the head's forward with a gradient) and greedy generation (the head without one, block
    by block) read the bf16 tables as the fp32 model reads its copy."""
    reference, stored, _ = pair(family)
    batch = prompt_masked_batch()
    for model in (reference, stored):
        model.zero_grad()
        model(**batch).loss.backward()
    assert lora_grads(stored).keys() == lora_grads(reference).keys()
    for name, grad in lora_grads(reference).items():
        assert torch.equal(lora_grads(stored)[name], grad), name
    prompt = {"input_ids": batch["input_ids"][:2, :6], "attention_mask": batch["attention_mask"][:2, :6]}
    outputs = [model.eval().generate(**prompt, max_new_tokens=5, do_sample=False, output_scores=True,
                                     return_dict_in_generate=True) for model in (reference, stored)]
    assert torch.equal(outputs[1].sequences, outputs[0].sequences)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(outputs[1].scores, outputs[0].scores))
