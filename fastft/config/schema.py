"""The recipe schema: one pydantic model drives validation, `--set` typing and the defaults users see."""
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from ..errors import FastftError

SEVEN_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


class Section(BaseModel):
    # No inf/nan: `learning_rate: .inf` passes a `> 0` check, and `epochs: .inf` would train forever.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(Section):
    name: str = Field(description="hub id, local folder, or embedded:gemma3-270m")
    backend: Literal["hf", "unsloth", "auto"] = "hf"
    dtype: DType = Field("auto", description="weights/compute dtype; auto = bf16 on a GPU that has it, else fp32")
    quantization: Literal["none", "nf4"] = "none"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto = flash_attention_2 on a CUDA GPU with flash-attn installed, else sdpa")
    trust_remote_code: bool = False


class LoraSection(Section):
    r: PositiveInt = 16
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[list[str], Literal["all-linear", "auto"]] = Field(
        "auto", description="auto = the model family's preset (the seven attention and MLP projections)")
    bias: Literal["none", "all", "lora_only"] = "none"
    train_tokens: list[str] = Field(
        default_factory=list,
        description="token strings whose embedding rows are trained, e.g. a base model's untrained end-of-turn token; "
                    "tied heads train the same rows")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("needs at least one module name, or 'all-linear'")
        return value


class QloraSection(Section):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto = the family's GPU preset (Qwen float16, others bfloat16), float32 on CPU")


class DatasetSection(Section):
    train: str = Field(description="training file (csv, jsonl, json, parquet) relative to the recipe's project")
    eval: Optional[str] = None
    task: Literal["summary", "instruction", "qa", "classification", "chat"] = "summary"
    format_type: Literal["chat", "instruction"] = "chat"
    columns: dict[str, str] = Field(default_factory=dict, description="task field -> column name in the file")
    system_prompt: Optional[str] = None
    max_prompt_tokens: PositiveInt = 1024
    max_answer_tokens: PositiveInt = 200
    max_train_samples: Optional[PositiveInt] = None
    max_eval_samples: Optional[PositiveInt] = None
    instruction_augmentation: bool = False
    packing: bool = Field(False, description="several short training examples per row, kept apart by position ids")


class TrainingSection(Section):
    epochs: float = Field(3, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    batch_size: PositiveInt = 8
    eval_batch_size: Optional[PositiveInt] = None
    grad_accum: PositiveInt = 8
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.1, ge=0)
    max_grad_norm: float = Field(1.2, gt=0)
    gradient_checkpointing: bool = True
    optimizer: str = Field("auto", description="auto = paged_adamw_32bit on CUDA, adamw_torch otherwise")
    logging_steps: PositiveInt = 10
    save_steps: Optional[PositiveInt] = Field(
        None, description="checkpoint (and evaluate) every N optimizer steps; unset = once per epoch, only with an eval split")
    save_total_limit: PositiveInt = 2
    eval_before_training: bool = True


class KernelsSection(Section):
    """Which fastft kernels replace the model's own code; each falls back to the plain path where unsupported."""

    lora: bool = True
    rope: bool = True
    rms_norm: bool = True
    mlp: bool = True
    loss: bool = True


class GenerationSection(Section):
    """Decoding for `fastft eval` / `generate`; temperature 0 means greedy."""

    max_new_tokens: PositiveInt = 128
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    num_beams: PositiveInt = 1
    batch_size: PositiveInt = 8


class OutputSection(Section):
    dir: str = "outputs"
    logs_dir: str = "logs"


class LoggingSection(Section):
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    tensorboard: bool = Field(False, description="TensorBoard events in <output.dir>/<experiment>/tensorboard "
                                                 "(report_to: [tensorboard] writes to the same folder)")


# The names fastft.evaluation.evaluate.task_metrics returns for each task that can pick a best checkpoint.
GENERATION_METRICS = {
    "summary": ("rouge_sum", "rouge1", "rouge2", "rougeL", "rouge_sum_morpheme"),
    "qa": ("f1", "exact_match", "f1_morpheme"),
    "classification": ("accuracy", "macro_f1"),
}
BEST_METRICS = ("eval_loss", *(name for names in GENERATION_METRICS.values() for name in names))


class EvaluationSection(Section):
    """Generation on the eval split during training, and what picks the best checkpoint."""

    generate_every_epoch: bool = Field(
        False, description="generate at every evaluation (before training and each epoch) and log the task metrics")
    max_samples: PositiveInt = Field(16, description="generate on the first N eval examples, the same ones each time")
    metric_for_best: Literal[BEST_METRICS] = Field(
        "eval_loss", description="eval_loss (lower is better) or a task metric (higher is better; needs generate_every_epoch)")


class Recipe(Section):
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(42, ge=0, lt=2**32, description="numpy's seed range, which set_seed also feeds")
    model: ModelSection
    lora: LoraSection = Field(default_factory=LoraSection)
    qlora: QloraSection = Field(default_factory=QloraSection)
    dataset: DatasetSection
    training: TrainingSection = Field(default_factory=TrainingSection)
    kernels: KernelsSection = Field(default_factory=KernelsSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    output: OutputSection = Field(default_factory=OutputSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)

    @model_validator(mode="after")
    def _evaluation_fits_the_data(self):
        # A FastftError, not a ValueError: pydantic would file a ValueError here under the whole recipe.
        check_evaluation(self.evaluation, self.dataset)
        return self


def check_evaluation(evaluation: EvaluationSection, dataset: DatasetSection) -> None:
    if evaluation.generate_every_epoch and not dataset.eval:
        raise FastftError("generating during training needs an eval split", where="evaluation.generate_every_epoch",
                          hint="set dataset.eval, or turn evaluation.generate_every_epoch off")
    metric = evaluation.metric_for_best
    if metric == "eval_loss":
        return
    offered = GENERATION_METRICS.get(dataset.task, ())
    if metric not in offered:
        raise FastftError(f"{metric!r} is not a metric of task {dataset.task!r}", where="evaluation.metric_for_best",
                          hint=f"use eval_loss{''.join(f' or {m}' for m in offered)}")
    if not evaluation.generate_every_epoch:
        raise FastftError(f"{metric!r} is measured on generated text, and nothing is generated during training",
                          where="evaluation.metric_for_best", hint="set evaluation.generate_every_epoch: true, or use eval_loss")
