"""The recipe schema: one pydantic model drives validation, `--set` typing and the defaults users see."""
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from ..errors import FastftError

SEVEN_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The dtypes fastft names, each a torch attribute, with the short name `fastft merge --dtype` also takes.
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
DType = Literal[("auto", *DTYPE_NAMES)]
# Where a relative dataset path is looked up, as every message about one says it.
DATA_PATHS = "relative to the working directory, else to the recipe's folder or a folder above it"


class Section(BaseModel):
    # No inf/nan: `learning_rate: .inf` passes a `> 0` check, and `epochs: .inf` would train forever.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(Section):
    name: str = Field(description="hub id, local folder, or embedded:gemma3-270m")
    backend: Literal["hf", "unsloth", "auto"] = Field(
        "hf", description="hf: transformers + PEFT; unsloth: Unsloth's loader (CUDA only); auto: unsloth where installed on a CUDA GPU, else hf")
    dtype: DType = Field("auto", description="weights/compute dtype; auto = bf16 on a GPU that has it, else fp32")
    quantization: Literal["none", "nf4"] = Field(
        "none", description="nf4: load the base in 4-bit NF4 and train QLoRA; none: plain LoRA")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto = flash_attention_2 on a CUDA GPU with flash-attn installed, else sdpa")
    trust_remote_code: bool = Field(
        False, description="run Python code shipped with the checkpoint (announced with a warning)")


class LoraSection(Section):
    r: PositiveInt = Field(16, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling: the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input during training")
    target_modules: Union[list[str], Literal["all-linear", "auto"]] = Field(
        "auto", description="auto = the model family's preset (the seven attention and MLP projections)")
    bias: Literal["none", "all", "lora_only"] = Field(
        "none", description="which biases train beside the adapters (PEFT's bias option)")
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
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the base weights")
    double_quant: bool = Field(True, description="quantize the quantization constants too")
    compute_dtype: DType = Field(
        "auto", description="auto = the family's GPU preset (Qwen float16, others bfloat16), float32 on CPU")


class DatasetSection(Section):
    train: str = Field(description=f"training file (csv, jsonl, json, parquet), {DATA_PATHS}")
    eval: Optional[str] = Field(None, description=f"evaluation file, {DATA_PATHS}; none: no evaluation")
    task: Literal["summary", "instruction", "qa", "classification", "chat"] = Field(
        "summary", description="how a row becomes an example: summary, instruction (alpaca-style), qa, classification (SWC) or chat (messages)")
    layout: Literal["chat", "instruction"] = Field(
        "chat", description="chat: the tokenizer's chat template, else fastft's template for its family; instruction: ### Instruction/Input/Response")
    columns: dict[str, str] = Field(default_factory=dict, description="task field -> column name in the file")
    system_prompt: Optional[str] = Field(
        None, description="system turn put before every prompt in the chat layout; none: no system turn")
    max_prompt_tokens: PositiveInt = Field(
        1024, description="prompt token budget; a longer prompt loses its oldest context first")
    max_answer_tokens: PositiveInt = Field(200, description="answer token budget; a longer answer is cut to it")
    max_train_samples: Optional[PositiveInt] = Field(None, description="train on the first N rows only; none: all")
    max_eval_samples: Optional[PositiveInt] = Field(None, description="evaluate on the first N rows only; none: all")
    instruction_augmentation: bool = Field(
        False, description="render each training example once per instruction phrasing of its task")
    packing: bool = Field(False, description="several short training examples per row, kept apart by position ids")


class TrainingSection(Section):
    epochs: float = Field(3, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    batch_size: PositiveInt = Field(8, description="examples per device in one micro-batch")
    eval_batch_size: Optional[PositiveInt] = Field(
        None, description="examples per device in one eval batch; none: batch_size")
    grad_accum: PositiveInt = Field(8, description="micro-batches accumulated into one optimizer step")
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the optimizer steps spent warming up")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.2, gt=0, description="gradient-norm clipping threshold")
    gradient_checkpointing: Union[bool, Literal["selective"]] = Field(
        True, description="true: keep each layer's input, recompute the whole layer in the backward pass (least "
                          "memory, most time); selective: recompute only the fused MLP's gate and up projections "
                          "(needs kernels.mlp); false: keep everything")
    optimizer: str = Field("auto", description="auto = paged_adamw_32bit on CUDA, adamw_torch otherwise")
    logging_steps: PositiveInt = Field(10, description="log the training loss every N optimizer steps")
    save_steps: Optional[PositiveInt] = Field(
        None, description="checkpoint (and evaluate) every N optimizer steps; unset = once per epoch, only with an eval split")
    save_total_limit: PositiveInt = Field(2, description="checkpoints kept on disk at most")
    eval_before_training: bool = Field(
        True, description="evaluate once before the first step (report.md's loss before training)")

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _checkpointing_mode(cls, value):
        if isinstance(value, bool) or value == "selective":
            return value
        raise ValueError("must be true, false or selective")


class KernelsSection(Section):
    """Which fastft kernels replace the model's own code; each falls back to the plain path where unsupported."""

    lora: bool = Field(True, description="fused LoRA linear layers")
    rope: bool = Field(True, description="fused rotary position embedding")
    rms_norm: bool = Field(True, description="fused RMSNorm")
    attention: bool = Field(True, description="CPU attention (sdpa) computing only the key blocks the mask opens")
    mlp: bool = Field(True, description="fused LoRA MLP block (gated activation)")
    loss: bool = Field(True, description="prompt-masked loss: the LM head and cross-entropy on labelled positions only")
    frozen_bf16: bool = Field(
        True, description="in a fp32 run, frozen LoRA base weights and embedding/LM-head tables that are bf16 values "
                          "(a bf16 checkpoint) stored in bf16, computed in fp32: same results, half their memory")


class GenerationSection(Section):
    """Decoding for `fastft eval` / `generate`; temperature 0 means greedy."""

    max_new_tokens: PositiveInt = Field(128, description="tokens generated per answer at most")
    temperature: float = Field(0.0, ge=0, description="0: greedy decoding; above 0: sampling at this temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus-sampling probability mass (with temperature above 0)")
    repetition_penalty: float = Field(1.0, gt=0, description="penalty on tokens already generated; 1: none")
    no_repeat_ngram_size: NonNegativeInt = Field(0, description="no n-gram of this many tokens is generated twice in one answer; 0: no limit")
    num_beams: PositiveInt = Field(1, description="beam-search width; 1: no beam search")
    batch_size: PositiveInt = Field(16, description="prompts generated together (batched by length, longest first)")


class OutputSection(Section):
    dir: str = Field("outputs", description="folder holding one run folder per experiment")
    logs_dir: str = Field("logs", description="folder of the run logs (<logs_dir>/YYYYMMDD/train/)")


class LoggingSection(Section):
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list, description="external trackers the Trainer reports to")
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

    generate_at_eval: bool = Field(
        False, description="generate at every evaluation (before training, then each epoch or every save_steps) and log the task metrics")
    max_samples: PositiveInt = Field(16, description="generate on the first N eval examples, the same ones each time")
    metric_for_best: Literal[BEST_METRICS] = Field(
        "eval_loss", description="eval_loss (lower is better) or a task metric (higher is better; needs generate_at_eval)")


class Recipe(Section):
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the run's name and the name of its folder under output.dir")
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
    if evaluation.generate_at_eval and not dataset.eval:
        raise FastftError("generating during training needs an eval split", where="evaluation.generate_at_eval",
                          hint="set dataset.eval, or turn evaluation.generate_at_eval off")
    metric = evaluation.metric_for_best
    if metric == "eval_loss":
        return
    offered = GENERATION_METRICS.get(dataset.task, ())
    if metric not in offered:
        raise FastftError(f"{metric!r} is not a metric of task {dataset.task!r}", where="evaluation.metric_for_best",
                          hint=f"use eval_loss{''.join(f' or {m}' for m in offered)}")
    if not evaluation.generate_at_eval:
        raise FastftError(f"{metric!r} is measured on generated text, and nothing is generated during training",
                          where="evaluation.metric_for_best", hint="set evaluation.generate_at_eval: true, or use eval_loss")
