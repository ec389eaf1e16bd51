"""What the Trainer-based systems share: stepping a Trainer by hand on fixed batches, and saying what ran."""
import tempfile
from pathlib import Path

import torch

# Nothing is saved (no train() loop, no checkpoints); Trainer only needs somewhere to point output_dir.
TRAINER_DIR = str(Path(tempfile.gettempdir()) / "fastft-bench-trainer")


class TrainerRun:
    """One optimizer step per call: Trainer.training_step (the system's own forward, loss and backward), then
    the optimizer Trainer itself creates. No dataloader, scheduler, clipping or logging, so the timed work is the
    same kind of step in every system and nothing outside the steps is timed."""

    def __init__(self, trainer, batches: list[dict], notes: str):
        self.trainer, self.batches, self.notes = trainer, batches, notes
        self.grad_norm = None  # of the last step, see trainable_grad_norm
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # normally set by Trainer.train's loop
        if trainer.args.gradient_checkpointing:  # Trainer.train would turn it on; we never call train()
            _enable_checkpointing(trainer.model)

    def _inputs(self, i: int) -> dict:
        device = self.trainer.args.device
        return {key: value.to(device) for key, value in self.batches[i].items()}  # a fresh dict: losses mutate it

    def step(self, i: int) -> float:
        trainer = self.trainer
        loss = trainer.training_step(trainer.model, self._inputs(i))
        self.grad_norm = trainable_grad_norm(trainer.model)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def loss(self, i: int) -> float:
        """The system's own loss on batch i, without gradients (after training: did all systems learn the same?)."""
        model = self.trainer.model
        model.eval()
        with torch.no_grad():
            loss = self.trainer.compute_loss(model, self._inputs(i))
        model.train()
        return loss.item()

    def settings(self) -> str:
        """The settings as the live objects have them, so a mismatch between systems shows in the output."""
        optimizer, model = self.trainer.optimizer, self.trainer.model
        groups = optimizer.param_groups  # Trainer sets lr and weight decay per group, not in the defaults
        lr, decay = _values(g["lr"] for g in groups), _values(g["weight_decay"] for g in groups)
        lora = model.peft_config["default"]
        targets = ",".join(sorted(lora.target_modules))
        checkpointing = "on" if _checkpointing(model) else "selective" if _recomputing(model) else "off"
        return (f"{type(optimizer).__name__}(lr={lr}, betas={tuple(groups[0]['betas'])}, eps={groups[0]['eps']:g}, "
                f"weight_decay={decay}); LoRA r={lora.r} alpha={lora.lora_alpha:g} dropout={lora.lora_dropout:g} "
                f"on {targets}; gradient checkpointing {checkpointing}")


def trainable_grad_norm(model) -> float:
    """L2 norm, in fp64, of the gradients of every parameter that requires one; a missing gradient counts as zero.
    The same function for every system, so a system whose adapters receive no gradient shows 0 (milliseconds per
    step for LoRA's few million parameters, inside the timed step)."""
    norms = [p.grad.detach().double().norm() for p in model.parameters() if p.requires_grad and p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


# transformers 5.2x renamed gradient checkpointing to activation checkpointing; older versions have only the old name.
def _enable_checkpointing(model) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _checkpointing(model) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(model, name):
            return bool(getattr(model, name))
    return False


def _recomputing(model) -> bool:
    """fastft's selective checkpointing: patched MLP blocks that recompute gate and up."""
    from fastft.patching.mlp import recomputing_blocks

    return recomputing_blocks(model) > 0


def checkpointing_arg(config_cls, on: bool) -> dict:
    """The TrainingArguments keyword for gradient checkpointing under its name in this transformers version."""
    fields = getattr(config_cls, "__dataclass_fields__", {})
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": on}


def _values(values) -> str:
    return "/".join(f"{v:g}" for v in sorted(set(values)))


def seed_adapters(seed: int) -> None:
    """Called right before adapters are injected, so every system starts from the same LoRA A matrices."""
    torch.manual_seed(seed)
