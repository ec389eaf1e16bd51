"""`fastft export`: a tiny run's adapter merged and written as GGUF, read back by transformers' GGUF loader and compared
with PEFT's own base + adapter; and the command's refusals, each one line that writes nothing."""
import pytest
import torch
from click.testing import CliRunner

from fastft.cli import main
from tests.factories import recipe_for, tiny_llama_checkpoint

PROMPT = "#Person1#은 지하철에 두고 내린 남색 장우산을 찾으러 유실물 센터에 온다."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(recipe, base folder, adapter folder): a tiny Llama and a LoRA adapter with random, non-zero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("export")
    base = tiny_llama_checkpoint(root / "base")
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    adapter = root / "run" / "final_model"
    get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), config).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    return recipe_for(root, base), base, adapter


def _export(recipe, *options):
    return CliRunner().invoke(main, ["export", str(recipe), *map(str, options)])


def test_exported_file_has_the_logits_of_base_plus_adapter(run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe, base, adapter = run
    out = tmp_path / "tiny.gguf"
    result = _export(recipe, "--adapter", adapter, "--gguf", out, "--set", "model.dtype=float32")
    assert result.exit_code == 0, result.output
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)).eval()
    ids = AutoTokenizer.from_pretrained(base)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        actual, expected = reloaded(ids).logits, reference(ids).logits
    assert ((actual - expected).abs().max() / expected.abs().max()).item() < 1e-2
    # the recipe's chat template (fastft's Llama-3 one: the tiny tokenizer has none of its own)
    from gguf import GGUFReader

    from fastft.data.chat_templates import LLAMA3_TEMPLATE
    assert GGUFReader(out).fields["tokenizer.chat_template"].contents() == LLAMA3_TEMPLATE


def _mistral_checkpoint(folder):
    from transformers import MistralConfig, MistralForCausalLM

    from tests.factories import tiny_bpe_tokenizer

    tokenizer = tiny_bpe_tokenizer()
    MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_unsupported_architecture_names_the_supported_ones(run, tmp_path):
    recipe, _, _ = run
    result = _export(recipe, "--merged", _mistral_checkpoint(tmp_path / "mistral"), "--gguf", tmp_path / "m.gguf")
    assert result.exit_code == 2, result.output
    assert "supports Gemma 3 (Gemma3ForCausalLM), Llama, Qwen2 and Qwen3" in result.output and "'mistral'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.gguf").exists()


REFUSALS = {
    "quantization": (["--quant", "q4_k"], ["unknown GGUF quantization 'q4_k'", "--quant f16, bf16, q8_0"]),
    "4-bit base": (["--set", "model.quantization=nf4"], ["base is 4-bit", "fastft merge --adapter", "--merged MERGED"]),
    "no model": (None, ["exactly one of --adapter and --merged"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_are_one_line_before_any_work(run, tmp_path, case):
    recipe, _, adapter = run
    options, phrases = REFUSALS[case]
    out = tmp_path / "model.gguf"
    result = _export(recipe, *(["--adapter", adapter] if options is not None else []), *(options or []), "--gguf", out)
    assert result.exit_code == 2, result.output
    for phrase in phrases:
        assert phrase in result.output
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(run, tmp_path):
    recipe, _, adapter = run
    out = tmp_path / "model.gguf"
    out.write_bytes(b"earlier")
    result = _export(recipe, "--adapter", adapter, "--gguf", out)
    assert result.exit_code == 2
    assert "the GGUF file already exists" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == b"earlier"
    result = _export(recipe, "--adapter", adapter, "--gguf", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"GGUF"
