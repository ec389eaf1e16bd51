"""One benchmark configuration, the workloads it can name, and the settings every system shares."""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fastft.config.schema import SEVEN_PROJECTIONS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "ko_dialogsum_sample" / "train.csv"

# Identical for every system. Dropout 0 so all systems compute the same function; a fixed learning rate so no
# scheduler differences creep into the losses compared after the timed steps.
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "targets": list(SEVEN_PROJECTIONS)}
OPTIM = {"name": "adamw_torch", "lr": 1e-4, "weight_decay": 0.0}
SEED = 0  # seeds the LoRA A init right before the adapters are injected, in every system

# workload -> fraction of tokens that are prompt (label -100). Both use the summarization sample's tokens;
# "summarization" is the prompt-heavy case of the targets, "chat" stands for multi-turn chat data
# where assistant turns are about half of the tokens.
WORKLOADS = {"summarization": 0.9, "chat": 0.5}
SYSTEMS = ("fastft", "fastft-nokernels", "hf-peft-trl", "liger", "unsloth")
# The systems with a "selective" checkpointing setting: fastft's fused MLP recomputes gate and up in backward
# (training.gradient_checkpointing: selective). transformers, PEFT, TRL, Liger and Unsloth checkpoint whole layers.
SELECTIVE_SYSTEMS = ("fastft",)


@dataclass(frozen=True)
class Config:
    system: str
    model: str = "gemma3-270m"  # a name in bench.models.RANDOM, "gemma3-270m", or a local checkpoint folder
    workload: str = "summarization"
    seq_len: int = 1024
    batch: int = 2
    quant: str = "none"  # "none" (LoRA) or "nf4" (QLoRA)
    masked_frac: float | None = None  # None: the workload's own
    warmup: int = 1
    timed: int = 2
    gradient_checkpointing: bool | str = False  # False, True or "selective"
    dtype: str | None = None  # the model's dtype; None: the device's default (dtype_name())

    @property
    def mask(self) -> float:
        return WORKLOADS[self.workload] if self.masked_frac is None else self.masked_frac

    @property
    def compute_dtype(self) -> str:
        return self.dtype or dtype_name()

    @property
    def steps(self) -> int:
        return self.warmup + self.timed

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls(**json.loads(text))


def checkpointing_label(setting) -> str:
    """A configuration's or row's gradient_checkpointing as the reports write it: off, on or selective."""
    return setting if setting == "selective" else "on" if setting else "off"


def selective_unavailable(cfg: Config) -> str | None:
    """Why this system cannot run this configuration's selective checkpointing, or None."""
    if cfg.gradient_checkpointing == "selective" and cfg.system not in SELECTIVE_SYSTEMS:
        return (f"{cfg.system} has no selective checkpointing (only fastft's fused MLP recomputes gate and up; "
                "the others checkpoint whole layers)")
    return None


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device_kind: str) -> str:
    # fp32 on CPU (exact comparisons across systems need fp32; the bf16 row is asked for by name), bf16 on GPU.
    return "bfloat16" if device_kind == "cuda" else "float32"


def dtype_name() -> str:
    return default_dtype(device())
