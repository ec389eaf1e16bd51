"""Trainer mixin: the evaluations and checkpoint saves that Trainer runs inside train() timed as their own phases
(runtime/phases.py), so that the time left in the run's "training" phase is its optimizer steps.

Wrapping the methods rather than listening to callbacks: on_evaluate fires after the loss pass and on_save after
the save, but nothing fires right before either starts.
"""
from ..runtime.phases import Phases


class TimedPhases:
    def __init__(self, *args, phases: Phases | None = None, **kwargs):
        """`phases`: the run's timer; a trainer built outside a run keeps one of its own."""
        super().__init__(*args, **kwargs)
        self.phases = phases or Phases()

    def evaluate(self, *args, **kwargs):
        # The generation callback runs inside, at on_evaluate, and times itself as "generation".
        with self.phases("eval_loss"):
            return super().evaluate(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        with self.phases("checkpoint_saving"):
            return super()._save_checkpoint(model, trial)
