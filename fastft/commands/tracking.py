"""The experiment trackers a recipe reports to (logging.report_to: wandb, mlflow), offline first.

fastft opens each tracker's run before training, so transformers' own WandbCallback / MLflowCallback (report_to
passes through to TrainingArguments) log every step into that run; when the run folder is complete, it adds the
finished run's record (the resolved recipe, metrics.json's values, report.md, training_curve.png) and closes it.
Where the tools' own variables are unset, everything stays local: W&B writes into the run folder (offline when
WANDB_MODE=offline), MLflow into a SQLite store beside the runs, <output.dir>/mlflow.db.
"""
import json
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import FastftError
from ..runtime.distributed import is_main
from ..runtime.outputs import METRICS, RECIPE_FILE
from .report import CURVE, LOG_HISTORY, REPORT

TRACKED_FILES = (RECIPE_FILE, METRICS, REPORT, CURVE)
MLFLOW_STORE = "mlflow.db"
MLFLOW_ARTIFACTS = "mlruns"


def flat(values: dict, prefix: str = "") -> dict:
    """{"fine_tuned": {"rouge1": 1.0}} -> {"fine_tuned.rouge1": 1.0}: trackers take one level of names."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        out.update(flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def numbers(metrics: dict) -> dict[str, float]:
    """The metrics a tracker can chart: numbers, not labels such as peak_memory_kind."""
    return {k: float(v) for k, v in flat(metrics).items() if isinstance(v, (int, float))}


class WandbRun:
    name = "wandb"

    def __init__(self, recipe, output_dir: Path):
        import wandb

        # WANDB_PROJECT / WANDB_DIR, where set, are the user's choice; otherwise the recipe's names and its folder.
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or recipe.experiment, name=recipe.experiment,
                                  dir=os.environ.get("WANDB_DIR") or str(output_dir),
                                  config={"recipe": recipe.model_dump(mode="json")})
        except wandb.errors.UsageError as error:
            raise FastftError(f"W&B cannot start a run: {error}", where="logging.report_to",
                              hint="run `wandb login`, or set WANDB_MODE=offline to keep the run in the run folder "
                                   "and `wandb sync` it later") from None

    def where(self) -> str:
        return f"W&B run {self.run.id} ({self.run.settings.mode}) in {self.run.dir}"

    def record(self, output_dir: Path, metrics: dict, step: int) -> None:
        self.run.summary.update(flat(metrics))
        for name in TRACKED_FILES:
            if (output_dir / name).exists():
                self.run.save(str(output_dir / name), base_path=str(output_dir), policy="now")

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowRun:
    name = "mlflow"

    def __init__(self, recipe, output_dir: Path):
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        folder = Path(recipe.output.dir).resolve()
        mlflow.set_tracking_uri(uri or f"sqlite:///{folder / MLFLOW_STORE}")
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe.experiment
        experiment = mlflow.get_experiment_by_name(name)
        # Left to MLflow, a local store's artifacts go to ./mlruns of whatever folder the command ran in.
        experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
            name, artifact_location=None if uri else (folder / MLFLOW_ARTIFACTS).as_uri())
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=recipe.experiment)
        # Prefixed: MLflowCallback logs TrainingArguments and the model config under their bare names, and a
        # parameter, once logged, cannot take another value.
        mlflow.log_params({f"recipe.{k}": v for k, v in flat(recipe.model_dump(mode="json")).items()})
        self.mlflow = mlflow

    def where(self) -> str:
        return f"MLflow run {self.run.info.run_id} in {self.mlflow.get_tracking_uri()}"

    def record(self, output_dir: Path, metrics: dict, step: int) -> None:
        # At the last step: MLflow shows a metric's value at its highest step, and train_loss was logged there too.
        self.mlflow.log_metrics(numbers(metrics), step=step)
        for name in TRACKED_FILES:
            if (output_dir / name).exists():
                self.mlflow.log_artifact(str(output_dir / name))

    def close(self, failed: bool) -> None:
        self.mlflow.end_run("FAILED" if failed else "FINISHED")


TRACKERS = {tracker.name: tracker for tracker in (WandbRun, MlflowRun)}


class Tracking:
    def __init__(self, runs: list):
        self.runs = runs

    def record(self, output_dir: Path) -> None:
        """Log the finished run folder's record to every tracker's run."""
        if not self.runs:
            return
        metrics = json.loads((output_dir / METRICS).read_text(encoding="utf-8"))
        history = json.loads((output_dir / LOG_HISTORY).read_text(encoding="utf-8"))
        step = max((entry.get("step", 0) for entry in history), default=0)
        for run in self.runs:
            run.record(output_dir, metrics, step)


@contextmanager
def tracked(recipe, output_dir: Path, run_log):
    """The runs of the trackers the recipe reports to, open on the main rank for the length of the block; closed as
    failed when the block raises."""
    names = [name for name in recipe.logging.report_to if name in TRACKERS] if is_main() else []
    with ExitStack() as stack:
        runs = []
        for name in names:
            run = TRACKERS[name](recipe, Path(output_dir))
            stack.enter_context(_closing(run))
            runs.append(run)
            run_log(f"tracking: {run.where()}")
        yield Tracking(runs)


@contextmanager
def _closing(run):
    try:
        yield None
    except BaseException:
        run.close(failed=True)
        raise
    run.close(failed=False)
