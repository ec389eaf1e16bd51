"""Tiny real models and tokenizers built in the tests: no downloads, seconds to make."""
import csv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DEV = REPO / "data" / "ko_dialogsum_sample" / "dev.csv"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"]


def sample_texts() -> list[str]:
    with SAMPLE_DEV.open(encoding="utf-8") as f:
        return [row["dialogue"] + "\n" + row["summary"] for row in csv.DictReader(f)]


def tiny_bpe_tokenizer(vocab_size: int = 600, specials=LLAMA3_SPECIALS):
    """A byte-level BPE trained on the Korean sample, with Llama-3's special tokens (so fastft picks its Llama-3 template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[1])


def tiny_llama_checkpoint(folder: Path, tokenizer=None, seed: int = 0) -> Path:
    """A 2-layer randomly initialised Llama with its tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or tiny_bpe_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def recipe_for(tmp_path: Path, model_dir: Path, extra: str = "") -> Path:
    """A recipe training `model_dir` on the dev sample, outputs and logs under tmp_path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"_base_: {REPO / 'recipes/base/causal_lm.yaml'}\n"
        "experiment: tiny\n"
        f"model: {{name: {model_dir}}}\n"
        f"dataset: {{train: {SAMPLE_DEV}, eval: {SAMPLE_DEV}, max_prompt_tokens: 192, max_answer_tokens: 48}}\n"
        "training: {epochs: 2, batch_size: 4, grad_accum: 2, learning_rate: 3.0e-3, warmup_ratio: 0.0, gradient_checkpointing: false, logging_steps: 2}\n"
        f"output: {{dir: {tmp_path / 'outputs'}, logs_dir: {tmp_path / 'logs'}}}\n" + extra,
        encoding="utf-8",
    )
    return path


def fastft_trainer(recipe, out_dir: Path, dataset=None):
    """(FastftTrainer, LoadedModel) built by the function `fastft run` builds with, saving no checkpoints and
    drawing no progress bars. `dataset` defaults to the recipe's encoded training split."""
    from fastft.data.pipeline import build_splits
    from fastft.models.resolve import resolve_model
    from fastft.training.build import build_trainer

    resolved = resolve_model(recipe, lambda *_: None)
    if dataset is None:
        dataset = build_splits(resolved.recipe.dataset, resolved.tokenizer, None)[0].dataset
    return build_trainer(resolved, dataset, None, out_dir, save=False)
