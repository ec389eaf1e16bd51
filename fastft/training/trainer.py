"""TRL's SFTTrainer with fastft's prompt-masked loss in place of its own forward-and-loss, atomic checkpoints
(checkpoints.py), evaluations and checkpoint saves timed as phases of the run (timing.py), and guards: a batch with
no trained token is skipped and counted; a non-finite loss or gradient stops the run naming the batch; running out
of GPU memory stops it naming what sizes a batch."""
import math
from pathlib import Path

import torch
from transformers import Trainer
from trl import SFTTrainer

from ..data.encode import IGNORE_INDEX
from ..errors import FastftError
from ..patching.loss import add_masked_loss_forward
from ..runtime.outputs import last_checkpoint
from .checkpoints import AtomicCheckpoints
from .timing import TimedPhases


class FastftTrainer(TimedPhases, AtomicCheckpoints, SFTTrainer):
    # Both loss paths divide by the token count of the whole accumulated batch, so Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, fused_loss: bool = True, token_budget: tuple[int, int] | None = None, **kwargs):
        """token_budget: the recipe's (dataset.max_prompt_tokens, dataset.max_answer_tokens), quoted on OOM."""
        super().__init__(*args, **kwargs)
        self.fused_loss = fused_loss
        if fused_loss:
            add_masked_loss_forward(self.model)
        self.token_budget = token_budget
        self.model_accepts_loss_kwargs = True  # makes Trainer count num_items_in_batch for us
        self.all_masked_batches = 0
        self._step_ids = []  # example ids of every micro-batch in the optimizer step being accumulated

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Under DDP every rank must run its backward (the gradient all-reduce waits for all of them), so there such a
        # batch runs and adds a zero loss and zero gradient.
        if self.args.world_size == 1 and not bool((inputs["labels"][..., 1:] != IGNORE_INDEX).any()):
            # Nothing to learn from; running it would only add a zero loss and spend a forward and backward.
            self.all_masked_batches += 1
            return torch.zeros((), device=self.args.device)
        batch_ids = inputs.get("example_ids")
        self._step_ids.extend(batch_ids or [])
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError as error:
            raise self._out_of_memory(inputs["input_ids"].shape[-1]) from error  # rows are padded to the longest
        if not torch.isfinite(loss).item():
            raise self._non_finite("training loss", loss.item(), batch_ids)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Trainer calls this once per optimizer step, after clipping and before the optimizer steps: the last
        # moment a NaN/inf gradient can be caught before it reaches the weights.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        step_ids, self._step_ids = self._step_ids, []
        # Under fp16 loss scaling an overflowing step is routine: the scaler skips it and lowers the scale.
        if grad_norm is not None and self.accelerator.scaler is None and not math.isfinite(float(grad_norm)):
            raise self._non_finite("gradient norm", float(grad_norm), step_ids)
        return grad_norm

    def _non_finite(self, what: str, value: float, example_ids) -> FastftError:
        checkpoint = last_checkpoint(Path(self.args.output_dir))
        return FastftError(
            f"the {what} became {value} at step {self.state.global_step + 1} on examples {example_ids}",
            hint=f"last good checkpoint: {checkpoint or 'none saved yet'}; lower training.learning_rate or "
                 "training.max_grad_norm, or inspect those examples with fastft preview",
        )

    def _out_of_memory(self, longest: int) -> FastftError:
        batch, accum = self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps
        budget = ("dataset.max_prompt_tokens={} + max_answer_tokens={}".format(*self.token_budget)
                  if self.token_budget else "dataset.max_prompt_tokens + max_answer_tokens")
        fixes = [f"lower training.batch_size and raise training.grad_accum to keep batch_size x grad_accum = {batch * accum}"]
        if not self.args.activation_checkpointing:
            fixes.append("set training.gradient_checkpointing: true")
        if getattr(self.model, "hf_quantizer", None) is None:
            fixes.append("train with QLoRA (--use-qlora)")
        fixes.append("lower the token budget")
        return FastftError(
            f"out of GPU memory at step {self.state.global_step + 1}: training.batch_size {batch}, "
            f"training.grad_accum {accum}, longest sequence in the batch {longest} tokens ({budget})",
            hint="; or ".join(fixes),
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop("example_ids", None)
        # TRL's fused-LM-head wrapper is never entered: it runs only when forward gets fused_lm_head=True.
        if not self.fused_loss:  # kernels.loss off: the model's own forward, full logits, HF loss
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        loss = model(**inputs, masked_loss=True, num_items_in_batch=num_items_in_batch)  # through DDP & co.
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # num_items_in_batch counts every rank's tokens and DDP averages the ranks' gradients: undo that mean
            # so the gradient is the one of the whole global batch (Trainer's own compute_loss does the same).
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss
