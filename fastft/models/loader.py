"""Load a causal LM and its tokenizer from a hub id, a local folder or the embedded default, then wrap it in LoRA."""
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FastftError
from ..runtime import cpu
from ..runtime.distributed import local_rank
from .embedded import is_embedded, resolve_embedded


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    source: str
    device: str
    dtype: torch.dtype
    trainable_params: int
    total_params: int
    backend: str = "hf"
    kernels: object = None  # fastft.patching.PatchReport


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of one of config.schema.DTYPE_NAMES."""
    return getattr(torch, name)


def resolve_dtype(name: str) -> torch.dtype:
    return dtype_choice(name)[0]


def dtype_choice(name: str) -> tuple[torch.dtype, str]:
    """(the dtype model.dtype `name` loads and computes in, why, in a few words for the start-up summary)."""
    if name != "auto":
        return torch_dtype(name), "set in the recipe"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: the GPU has bf16"
        return torch.float32, "auto: the GPU lacks bf16"
    # fp32 on every CPU: where bf16 is native it is offered, not chosen, until it is shown faster at an equal loss on
    # a real model (README, bf16 on the CPU); where it is emulated its matmuls are far slower (runtime/cpu.py).
    native = cpu.native_bf16()
    if native:
        return torch.float32, f"auto: fp32 on the CPU; it multiplies bf16 natively ({native}): model.dtype: bfloat16 to try it"
    return torch.float32, "auto: fp32 on the CPU, which has no native bf16 (AVX512-BF16 or AMX)"


def resolve_source(name: str, notify=print) -> str:
    if is_embedded(name):
        return str(resolve_embedded(name, notify))
    return name


def load_tokenizer(source: str, trust_remote_code: bool = False, notify=print):
    """(tokenizer, model config or None), after check_checkpoint: every command loads the tokenizer first, so a
    model fastft will not load is refused before anything is written."""
    from transformers import AutoTokenizer

    config = check_checkpoint(source, trust_remote_code, notify)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise _not_found(source, exc) from None
    if tokenizer.pad_token is None:
        # A dedicated pad token keeps padding distinguishable from the trained end-of-sequence token.
        pad = "<|finetune_right_pad_id|>" if "<|finetune_right_pad_id|>" in tokenizer.get_vocab() else tokenizer.eos_token
        tokenizer.pad_token = pad
    tokenizer.padding_side = "right"
    return tokenizer, config


def check_checkpoint(source: str, trust_remote_code: bool, notify=print):
    """Weights load only from safetensors (a pickle can run code when unpickled), and a checkpoint's own Python
    code runs only when the recipe sets model.trust_remote_code, which is then announced. Returns the model's
    config, the one read of it; None when there is none (a tokenizer-only folder: loading the model reports it)."""
    from transformers import AutoConfig

    folder = Path(source)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        raise FastftError(
            f"model {source!r} has only PyTorch pickle weights (*.bin); fastft loads weights from safetensors only, "
            "because unpickling a file can run arbitrary code",
            where="model.name",
            hint="convert it once where you trust the file: AutoModelForCausalLM.from_pretrained(folder, use_safetensors=False)"
                 ".save_pretrained(folder), which writes model.safetensors",
        )
    if trust_remote_code:
        notify(f"warning: model.trust_remote_code is true: Python code shipped with {source} runs on this machine")
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _untrusted_code(source) from None
        return None


def _untrusted_code(source: str) -> FastftError:
    return FastftError(f"model {source!r} needs its own Python code to load, and fastft does not run a checkpoint's code "
                       "unless told to", where="model.trust_remote_code",
                       hint="read that code, and if you trust it set model.trust_remote_code: true")


def _not_found(source: str, exc: Exception) -> FastftError:
    where = "local folder" if Path(source).exists() else "hub id (no network here means it must be in the local cache)"
    return FastftError(
        f"cannot load model {source!r} as a {where}: {str(exc).splitlines()[0][:200]}",
        hint="set model.name to a local checkpoint folder, a cached hub id, or embedded:gemma3-270m",
    )


def load_base_model(model_cfg, qlora_cfg, source: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = resolve_dtype(model_cfg.dtype)
    kwargs = {"dtype": dtype, "attn_implementation": model_cfg.attn_implementation, "trust_remote_code": model_cfg.trust_remote_code,
              "use_safetensors": True}
    if model_cfg.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=qlora_cfg.quant_type,
            bnb_4bit_use_double_quant=qlora_cfg.double_quant,
            bnb_4bit_compute_dtype=torch_dtype(qlora_cfg.compute_dtype),
        )
        if torch.cuda.is_available():  # each data-parallel rank holds its whole 4-bit copy on its own GPU
            kwargs["device_map"] = {"": local_rank()}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise _not_found(source, exc) from None
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise _untrusted_code(source) from None
    return model, dtype


def add_lora(model, lora_cfg, quantized: bool, gradient_checkpointing: bool, trained_token_ids: list[int]):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=lora_cfg.target_modules,
        bias=lora_cfg.bias,
        task_type="CAUSAL_LM",
        # Rows added for missing chat tokens start untrained, and a base model's own chat tokens may never have been
        # trained (lora.train_tokens); LoRA on the projections leaves embedding rows as they are, so train just those
        # rows, not the whole embedding. PEFT makes a tied LM head follow the same rows.
        trainable_token_indices={"embed_tokens": trained_token_ids} if trained_token_ids else None,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise FastftError(f"LoRA setup failed: {exc}", where="lora.target_modules", hint="name modules that exist in this model, or use all-linear") from None


def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
