"""The optional packages a recipe needs, checked before a command does any work.

A missing one ends the command in its first seconds, naming the recipe key that needs it and the install command,
instead of after a model conversion, an evaluation and minutes of generation. Only find_spec: nothing is imported.
"""
import importlib.util
from dataclasses import dataclass
from typing import Callable

from ..errors import FastftError
from .schema import GENERATION_METRICS

# What a command does with its recipe: "train" (`run`, each `sweep` cell, `validate`), "eval" (generate and score),
# "generate" (generate only).
USES = ("train", "eval", "generate")
KOREAN = 'pip install -e ".[ko]"'


def _morpheme_metrics(recipe) -> bool:
    """The task's scores include Korean morpheme ones (ROUGE or QA F1 on Kiwi morphemes)."""
    return any(name.endswith("_morpheme") for name in GENERATION_METRICS.get(recipe.dataset.task, ()))


@dataclass(frozen=True)
class Need:
    uses: tuple[str, ...]  # the commands that import the package when `applies`
    key: str  # the recipe key whose value asks for it
    applies: Callable[[object], bool]
    why: str  # what needs it, as the message says
    module: str  # the import name
    package: str  # the name pip knows
    install: str
    instead: str  # how to do without it


NEEDS = (
    Need(("train",), "evaluation.generate_at_eval", lambda r: r.evaluation.generate_at_eval and _morpheme_metrics(r),
         "scoring generations on Korean morphemes", "kiwipiepy", "kiwipiepy", KOREAN, "set evaluation.generate_at_eval: false"),
    Need(("eval",), "dataset.task", _morpheme_metrics,
         "scoring generations on Korean morphemes", "kiwipiepy", "kiwipiepy", KOREAN, "use `fastft generate` to predict without scores"),
    Need(USES, "model.quantization", lambda r: r.model.quantization == "nf4",
         "loading the base in 4 bits (QLoRA)", "bitsandbytes", "bitsandbytes", 'pip install "bitsandbytes>=0.45"', "set model.quantization: none"),
    Need(USES, "model.attn_implementation", lambda r: r.model.attn_implementation == "flash_attention_2",
         "flash_attention_2", "flash_attn", "flash-attn", 'pip install -e ".[gpu]"', "set model.attn_implementation: auto"),
    Need(("train",), "model.backend", lambda r: r.model.backend == "unsloth",
         "the unsloth backend", "unsloth", "unsloth", 'pip install -e ".[unsloth]"', "set model.backend: hf"),
    Need(("train",), "logging.tensorboard", lambda r: r.logging.tensorboard,
         "TensorBoard logging", "tensorboard", "tensorboard", 'pip install -e ".[tensorboard]"', "set logging.tensorboard: false"),
    *(Need(("train",), "logging.report_to", lambda r, name=name: name in r.logging.report_to,
           f"reporting to {name}", name, name, f'pip install -e ".[{name}]"', f"drop {name} from logging.report_to")
      for name in ("tensorboard", "wandb", "mlflow")),
)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_optional_packages(recipe, use: str) -> None:
    """Refuse, before any work, a recipe whose `use` ("train", "eval" or "generate") needs a package not installed."""
    for need in NEEDS:
        if use in need.uses and need.applies(recipe) and not installed(need.module):
            raise FastftError(f"{need.why} needs {need.package}, which is not installed", where=need.key,
                              hint=f"{need.install}, or {need.instead}")


# Packages fastft takes by itself where installed (on a CUDA GPU): `auto` attention and backend.
ACCELERATIONS = (("flash_attn", "flash-attn"), ("unsloth", "unsloth"))


def optional_summary(recipe) -> str:
    """One start-up line on the optional accelerations this run goes without."""
    missing = [name for module, name in ACCELERATIONS if not installed(module)]
    parts = [f"{', '.join(missing)} not installed"] if missing else []
    if recipe.model.quantization != "nf4":
        parts.append("bitsandbytes 4-bit unused (model.quantization: none)")
    return "; ".join(parts) or "none missing"
