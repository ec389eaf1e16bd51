"""The trainer's side of a requested stop (runtime/interrupt.py): at the end of the optimizer step in which a rank
received SIGINT or SIGTERM, every rank saves a checkpoint of that step and leaves the training loop together."""
from transformers import TrainerCallback

from ..runtime.distributed import max_over_ranks
from ..runtime.interrupt import StopRequests


class StopAtStepEnd(TrainerCallback):
    def __init__(self, requests: StopRequests):
        self.requests = requests
        self.signal = 0  # the signal every rank stopped for (the largest any rank received), 0 while training goes on

    def on_step_end(self, args, state, control, **kwargs):
        # Every rank takes part in the reduction at every step, so a signal that reached only one rank still stops
        # all of them after the same step.
        self.signal = max_over_ranks(self.requests.received)
        if self.signal:
            control.should_log = True  # the step's loss goes into the checkpoint's log history
            control.should_save = True
            control.should_training_stop = True
        return control
