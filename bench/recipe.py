"""The fastft recipe equivalent of a benchmark configuration: what a fastft user would write for it."""
from .config import LORA, OPTIM, SAMPLE, SEED, Config


def fastft_recipe(cfg: Config, source, kernels_on: bool = True):
    from fastft.config.schema import Recipe

    compute = cfg.compute_dtype
    return Recipe(
        experiment="bench",
        seed=SEED,
        model={"name": str(source), "dtype": compute, "quantization": cfg.quant, "attn_implementation": "sdpa"},
        lora={"r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"], "target_modules": LORA["targets"]},
        qlora={"quant_type": "nf4", "double_quant": True, "compute_dtype": compute},
        # Limits large enough that no example is cut: the rows are fitted to the benchmark length afterwards.
        dataset={"train": str(SAMPLE), "task": "summary", "layout": "chat",
                 "max_prompt_tokens": 8192, "max_answer_tokens": 2048},
        training={"max_steps": cfg.steps, "batch_size": cfg.batch, "grad_accum": 1, "learning_rate": OPTIM["lr"],
                  "lr_scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": OPTIM["weight_decay"],
                  "gradient_checkpointing": cfg.gradient_checkpointing, "optimizer": OPTIM["name"],
                  "logging_steps": 1000, "eval_before_training": False},
        kernels={name: kernels_on for name in ("lora", "rope", "rms_norm", "mlp", "loss")},
    )
