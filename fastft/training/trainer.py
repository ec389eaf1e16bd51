"""TRL's SFTTrainer with fastft's prompt-masked loss in place of its own forward-and-loss, and two guards:
a batch with no trained token is skipped and counted, a non-finite loss stops the run naming the batch."""
from pathlib import Path

import torch
from transformers import Trainer
from trl import SFTTrainer

from ..data.encode import IGNORE_INDEX
from ..errors import FastftError
from .loss import prompt_masked_loss
from .outputs import last_checkpoint


class FastftTrainer(SFTTrainer):
    # Both loss paths divide by the token count of the whole accumulated batch, so Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, fused_loss: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_loss = fused_loss
        self.model_accepts_loss_kwargs = True  # makes Trainer count num_items_in_batch for us
        self.all_masked_batches = 0
        self._batch_ids = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not bool((inputs["labels"][..., 1:] != IGNORE_INDEX).any()):
            # Nothing to learn from; running it would only add a zero loss and spend a forward and backward.
            self.all_masked_batches += 1
            return torch.zeros((), device=self.args.device)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).item():
            raise self._non_finite(loss.item())
        return loss

    def _non_finite(self, value: float) -> FastftError:
        checkpoint = last_checkpoint(Path(self.args.output_dir))
        return FastftError(
            f"the training loss became {value} at step {self.state.global_step + 1} on examples {self._batch_ids}",
            hint=f"last good checkpoint: {checkpoint or 'none saved yet'}; lower training.learning_rate or "
                 "training.max_grad_norm, or inspect those examples with fastft preview",
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._batch_ids = inputs.pop("example_ids", None)
        # TRL's fused-LM-head wrapper is never entered: it runs only when forward gets fused_lm_head=True.
        if not self.fused_loss:  # kernels.loss off: the model's own forward, full logits, HF loss
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        loss = prompt_masked_loss(model, inputs, num_items_in_batch)
        return (loss, None) if return_outputs else loss
