"""fastft.commands.merge.merge_adapter: the merged checkpoint behaves exactly like base + adapter."""
import shutil

import pytest
import torch
import yaml

from fastft.commands.merge import merge_adapter
from fastft.errors import FastftError
from tests.factories import tiny_llama_checkpoint

PROMPT = "#Person1#은 지하철에 두고 내린 남색 장우산을 찾으러 유실물 센터에 온다."
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny base checkpoint and a LoRA adapter with random, non-zero A and B, saved as a fastft run saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("merge")
    base = tiny_llama_checkpoint(root / "base")
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS, init_lora_weights=False, task_type="CAUSAL_LM")
    adapter = root / "run" / "final_model"
    get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), config).save_pretrained(adapter)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.save_pretrained(adapter)
    return root, base, adapter, tokenizer(PROMPT, return_tensors="pt").input_ids


def with_adapter(base_model, adapter):
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(adapter)).eval()


def dense(path, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()


@torch.no_grad()
def logits(model, ids):
    return model(ids).logits


def relative_error(actual, expected) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def test_merged_model_matches_base_plus_adapter(run):
    root, base, adapter, ids = run
    merged_dir = merge_adapter(adapter, root / "merged", dtype="float32")
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()

    merged, reference = dense(merged_dir), with_adapter(dense(base), adapter)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    expected = logits(reference, ids)
    assert relative_error(logits(dense(base), ids), expected) > 0.1  # the adapter really changes the model
    assert relative_error(logits(merged, ids), expected) <= 1e-4

    greedy = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(merged.generate(ids, **greedy), reference.generate(ids, **greedy))


def test_qlora_adapter_merges_into_the_dequantized_base(run):
    """With the run's recipe saying nf4, the merge lands on the 4-bit weights the adapter was trained against."""
    from transformers import BitsAndBytesConfig

    root, base, adapter, ids = run
    qlora_adapter = shutil.copytree(adapter, root / "qlora_run" / "final_model")
    qlora = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    recipe = {"model": {"name": str(base), "quantization": "nf4"}, "qlora": qlora}
    (qlora_adapter.parent / "resolved_recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    merged = dense(merge_adapter(qlora_adapter, root / "qlora_merged", dtype="float32"))

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    four_bit = with_adapter(dense(base, quantization_config=bnb), adapter)
    dequantized = with_adapter(dense(base, quantization_config=bnb).dequantize(), adapter)
    assert relative_error(logits(merged, ids), logits(dequantized, ids)) <= 1e-4
    # Against the 4-bit model itself (whose CPU matmul rounds through bf16), merging into the original
    # weights is off by their quantization error; the dequantized merge is ten times closer.
    naive = with_adapter(dense(base), adapter)
    quantized_logits = logits(four_bit, ids)
    assert 10 * relative_error(logits(merged, ids), quantized_logits) < relative_error(logits(naive, ids), quantized_logits)


def test_adapter_trained_with_added_chat_tokens(run):
    """A run that added a chat token resized the embeddings and trained its row; the merge resizes to match."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    root, base, _, _ = run
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|turn|>"]})
    model = dense(base)
    model.resize_token_embeddings(len(tokenizer))
    torch.manual_seed(2)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM",
                        trainable_token_indices={"embed_tokens": tokenizer.convert_tokens_to_ids(["<|turn|>"])})
    trained = get_peft_model(model, config).eval()
    adapter = root / "chat_run" / "final_model"
    trained.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    ids = tokenizer(PROMPT + "<|turn|>", return_tensors="pt").input_ids

    merged = dense(merge_adapter(adapter, root / "chat_merged", dtype="float32"))
    assert relative_error(logits(merged, ids), logits(trained, ids)) <= 1e-4


def test_bf16_merge_saves_bf16_weights(run):
    from safetensors import safe_open

    root, _, adapter, _ = run
    merged_dir = merge_adapter(adapter, root / "merged_bf16", dtype="bf16")
    with safe_open(merged_dir / "model.safetensors", "pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}


def test_missing_adapter_folder(tmp_path):
    with pytest.raises(FastftError, match="adapter folder does not exist") as error:
        merge_adapter(tmp_path / "nope", tmp_path / "out")
    assert "final_model" in str(error.value)


def test_folder_without_adapter_config(tmp_path):
    with pytest.raises(FastftError, match="no adapter_config.json"):
        merge_adapter(tmp_path, tmp_path / "out")


def test_unknown_dtype(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FastftError, match="unknown dtype 'int8'") as error:
        merge_adapter(tmp_path, tmp_path / "out", dtype="int8")
    assert "bfloat16" in str(error.value)


def test_refuses_a_non_empty_output_folder(run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FastftError, match="output folder is not empty"):
        merge_adapter(run[2], tmp_path)
