"""TRL's SFTTrainer with fastft's prompt-masked loss in place of its own forward-and-loss."""
from transformers import Trainer
from trl import SFTTrainer

from .loss import prompt_masked_loss


class FastftTrainer(SFTTrainer):
    # Both loss paths divide by the token count of the whole accumulated batch, so Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, fused_loss: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_loss = fused_loss
        self.model_accepts_loss_kwargs = True  # makes Trainer count num_items_in_batch for us

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL's fused-LM-head wrapper is never entered: it runs only when forward gets fused_lm_head=True.
        if not self.fused_loss:  # kernels.loss off: the model's own forward, full logits, HF loss
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        loss = prompt_masked_loss(model, inputs, num_items_in_batch)
        return (loss, None) if return_outputs else loss
