"""Generation on a fixed slice of the eval split at every evaluation of a training run.

The task metrics join eval_loss in the evaluation's metrics, so `evaluation.metric_for_best` can pick the best
checkpoint by them, and each evaluation's predictions land in <output>/generations/ for inspection.
"""
from pathlib import Path

from transformers import TrainerCallback

from ..config.schema import GENERATION_METRICS
from ..data.pipeline import Split, build_encoder
from ..models.merged_view import merged_view
from ..runtime.outputs import GENERATIONS
from ..runtime.phases import Phases
from .evaluate import task_metrics
from .generate import generate_texts
from .predict import references, write_predictions


def evaluation_name(state) -> str:
    """epoch_0 before training, epoch_<k> at the end of epoch k, step_<n> for an evaluation inside an epoch."""
    epoch = state.epoch or 0
    return f"epoch_{int(epoch)}" if epoch == int(epoch) else f"step_{state.global_step}"


class EpochGeneration(TrainerCallback):
    """`log_metrics` is the trainer's own `log`: Trainer logs an evaluation before it calls on_evaluate, so the task
    metrics go out as a second entry at the same step (log history, run log, TensorBoard). `phases`: the run's timer
    (runtime/phases.py); generating and scoring count as "generation", inside the evaluation that calls this."""

    def __init__(self, recipe, evaluation: Split, tokenizer, output_dir: Path, log_metrics, phases: Phases):
        # The first examples of the eval split training evaluates on (already cut to dataset.max_eval_samples).
        self.examples = evaluation.examples[: recipe.evaluation.max_samples]
        self.references = references(self.examples)
        self.encoder = build_encoder(recipe.dataset, tokenizer)
        self.tokenizer = tokenizer
        self.generation = recipe.generation
        self.task = recipe.dataset.task
        self.folder = output_dir / GENERATIONS
        self.log_metrics = log_metrics
        self.phases = phases

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        with self.phases("generation"):
            self._generate_and_score(state, model, metrics)

    def _generate_and_score(self, state, model, metrics: dict) -> None:
        predictions = self._generate(model)
        scores = task_metrics(self.task, predictions, self.references)
        if state.is_world_process_zero:
            self.folder.mkdir(exist_ok=True)
            write_predictions(self.folder / f"{evaluation_name(state)}.csv", self.examples, predictions, self.references)
        if scores:
            logged = {f"eval_{name}": value for name, value in scores.items()}
            metrics.update(logged)  # the dict evaluate() returns and the best checkpoint is chosen from
            self.log_metrics(logged)

    def _generate(self, model) -> list[str]:
        was_training = model.training
        model.eval()  # no dropout, and no gradient checkpointing, which would also switch the KV cache off
        try:
            with merged_view(model):  # decodes as `fastft eval --adapter` does; training gets its very weights back
                return generate_texts(model, self.tokenizer, self.encoder, self.examples, self.generation)
        finally:
            model.train(was_training)

    def logged_at(self, state, step: int) -> dict:
        """The task metrics logged at `step`, from the log history, which a resumed run has from its checkpoint."""
        if self.task not in GENERATION_METRICS:
            return {}
        marker = f"eval_{GENERATION_METRICS[self.task][0]}"
        for entry in reversed(state.log_history):
            if entry.get("step") == step and marker in entry:
                return {key.removeprefix("eval_"): value for key, value in entry.items() if key.startswith("eval_")}
        return {}

    def summary(self, state) -> dict:
        """metrics.json's `zero_shot` (the evaluation at step 0, before training) and `fine_tuned` (the model training
        ended with: the best checkpoint, which load_best_model_at_end restores) task metrics."""
        found = {"zero_shot": self.logged_at(state, 0),
                 "fine_tuned": self.logged_at(state, state.best_global_step or state.global_step)}
        return {key: value for key, value in found.items() if value}
