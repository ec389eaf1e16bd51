"""`fastft export`: a run's adapter merged into its base (or a merged checkpoint) written as one GGUF file for
llama.cpp, Ollama and LM Studio, with the chat template the run trained on."""
from pathlib import Path

from ..config.loader import load_recipe
from ..data.chat_templates import template_for
from ..errors import FastftError
from ..evaluation.generate import load_for_inference
from ..models.gguf import QUANTS, GGUFExportError, write_gguf
from ..runtime.writable import check_writable_file


def export_gguf(recipe_file: Path, sets, adapter: Path | None, merged: Path | None, out: Path, quant: str,
                overwrite: bool, notify=print) -> Path:
    """Write the recipe's base model with `adapter` merged in, or the checkpoint in `merged`, to the GGUF file `out`."""
    if (adapter is None) == (merged is None):
        raise FastftError("export needs exactly one of --adapter and --merged",
                          hint="--adapter DIR for a run's adapter, --merged DIR for a `fastft merge` checkpoint")
    if quant not in QUANTS:
        raise FastftError(f"unknown GGUF quantization {quant!r}", hint=f"use --quant {', '.join(QUANTS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FastftError("the GGUF file already exists", where=str(out), hint="name a new file, or pass --overwrite")
    check_writable_file(out, "--gguf")
    recipe = load_recipe(recipe_file, sets)
    if merged is not None:
        model, tokenizer = _merged_checkpoint(Path(merged), recipe.model.trust_remote_code)
    else:
        if recipe.model.quantization == "nf4":
            # unmerged LoRA over NF4 weights has no GGUF form, and merging into them would requantize
            raise FastftError("the recipe's base is 4-bit (model.quantization: nf4), which export does not merge into",
                              hint=f"run `fastft merge --adapter {adapter} --out MERGED`, then export with --merged MERGED")
        model, tokenizer = load_for_inference(recipe, Path(adapter), notify)
    try:
        return write_gguf(model, tokenizer, out, quant=quant, chat_template=template_for(tokenizer))
    except GGUFExportError as error:
        raise FastftError(error.message, hint=error.hint) from None


def _merged_checkpoint(folder: Path, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise FastftError("--merged is not a model checkpoint (no config.json)", where=str(folder),
                          hint="name the folder `fastft merge --out` wrote")
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer
