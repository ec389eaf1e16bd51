"""hf-peft-trl: what users run today. transformers loads the model, PEFT adds LoRA, TRL's SFTTrainer trains with
completion-only loss. The dataset is a prompt-completion one already tokenized (input_ids + completion_mask from
the same token ids every system gets); TRL builds the labels and batches with its own preparation and collator."""
import torch

from ..config import LORA, OPTIM, SEED
from .common import TRAINER_DIR, TrainerRun, checkpointing_arg, seed_adapters


def unavailable(cfg) -> str | None:
    return None


def build(cfg, data):
    return trl_run(cfg, data, lora_model(cfg, data.source), "kernels: none (TRL's fused LM head)")


def lora_model(cfg, source):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, cfg.compute_dtype)
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    if cfg.quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if cfg.quant == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                        target_modules=LORA["targets"], bias="none", task_type="CAUSAL_LM")
    seed_adapters(SEED)
    return get_peft_model(model, config)


def trl_run(cfg, data, model, notes: str, **config_overrides) -> TrainerRun:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [row for batch in data.batches for row in batch]
    dataset = Dataset.from_list([{"input_ids": r.input_ids, "completion_mask": r.completion_mask} for r in rows])
    on_gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=TRAINER_DIR, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch,
        gradient_accumulation_steps=1, learning_rate=OPTIM["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=OPTIM["weight_decay"], optim=OPTIM["name"],
        # TRL defaults to gradient checkpointing and bf16; both are set to what every system uses
        **checkpointing_arg(SFTConfig, cfg.gradient_checkpointing), bf16=on_gpu and cfg.compute_dtype == "bfloat16",
        completion_only_loss=True, max_length=None, packing=False, report_to="none", seed=SEED,
        dataloader_pin_memory=on_gpu, **config_overrides,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=data.tokenizer)
    return TrainerRun(trainer, trl_batches(trainer, data.batches), notes)


def trl_batches(trainer, batches) -> list[dict]:
    """TRL's own prepared examples through TRL's collator, checked against the rows the other systems train on."""
    prepared, out, offset = trainer.train_dataset, [], 0
    for rows in batches:
        examples = [prepared[offset + j] for j in range(len(rows))]
        offset += len(rows)
        batch = trainer.data_collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        same_ids = torch.equal(batch["input_ids"], torch.tensor([r.input_ids for r in rows]))
        if not (same_ids and torch.equal(batch["labels"], torch.tensor([r.labels for r in rows]))):
            raise RuntimeError("TRL prepared other tokens or labels than the rows every system trains on")
        out.append(batch)
    return out
