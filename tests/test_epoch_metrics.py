"""Generation metrics at every evaluation of a training run, the best checkpoint chosen by them, TensorBoard events."""
import csv
import json

import pytest
from click.testing import CliRunner

from fastft.cli import main
from fastft.config.loader import load_recipe
from fastft.config.schema import GENERATION_METRICS
from fastft.errors import FastftError
from fastft.evaluation.evaluate import task_metrics
from fastft.metrics import rouge
from fastft.metrics.loops import loop_count
from fastft.metrics.tokenize import _kiwi, morphemes
from tests.factories import recipe_for

BEST = "rouge_sum_morpheme"  # the tiny model's whitespace ROUGE is 0 at every epoch; its morpheme ROUGE is not
GENERATING = (f"evaluation: {{generate_at_eval: true, max_samples: 4, metric_for_best: {BEST}}}\n"
              "generation: {max_new_tokens: 16, batch_size: 4}\nlogging: {tensorboard: true}\n")


@pytest.fixture(scope="module")
def generating_run(tmp_path_factory, tiny_llama):
    """One 2-epoch run on the tiny Llama that generates at every evaluation; its recipe and output folder."""
    tmp = tmp_path_factory.mktemp("generating_run")
    recipe = recipe_for(tmp, tiny_llama, GENERATING)
    result = CliRunner().invoke(main, ["run", str(recipe), "--set", "dataset.max_train_samples=24", "--set", "dataset.max_eval_samples=8"])
    assert result.exit_code == 0, result.output
    return recipe, tmp / "outputs" / "tiny"


def read_generations(out, epoch: int) -> list[dict]:
    with (out / "generations" / f"epoch_{epoch}.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def rouge_of(rows: list[dict]) -> dict:
    predictions, references = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    morpheme = rouge(predictions, references, tokenize="morpheme")
    return {**rouge(predictions, references), **{f"{k}_morpheme": v for k, v in morpheme.items()},
            "loops": loop_count(predictions)}


def final_state(out) -> dict:
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())


def scored(state) -> dict[int, dict]:
    """{step: the log entry of the task metrics generated at that step's evaluation}; step 0 is the zero-shot one."""
    return {e["step"]: e for e in state["log_history"] if f"eval_{BEST}" in e}


def logged_metrics(entry: dict) -> dict:
    return {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}


def best_epoch(state) -> int:
    return int(scored(state)[state["best_global_step"]]["epoch"])


def test_logged_rouge_is_the_rouge_of_the_written_predictions(generating_run):
    _, out = generating_run
    logged = scored(final_state(out)).values()
    assert [e["epoch"] for e in logged] == [0, 1, 2]  # before training, then after each epoch
    for entry in logged:
        rows = read_generations(out, int(entry["epoch"]))
        assert [r["id"] for r in rows] == ["dev_0", "dev_1", "dev_2", "dev_3"]  # the first max_samples, every time
        assert logged_metrics(entry) == rouge_of(rows)


def test_zero_shot_and_fine_tuned_scores_in_metrics_json(generating_run):
    _, out = generating_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_shot"] == rouge_of(read_generations(out, 0))
    assert metrics["fine_tuned"] == rouge_of(read_generations(out, best_epoch(final_state(out))))


def test_best_checkpoint_is_the_one_with_the_highest_generation_metric(generating_run):
    _, out = generating_run
    state = final_state(out)
    # The zero-shot evaluation has no checkpoint, so it cannot be the best one.
    candidates = [(e[f"eval_{BEST}"], step) for step, e in scored(state).items() if step > 0]
    best_value = max(value for value, _ in candidates)
    first_best_step = next(step for value, step in candidates if value == best_value)  # Trainer keeps the first of a tie
    assert state["best_metric"] == best_value
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{first_best_step}")


def test_generation_during_training_matches_fastft_eval_of_the_final_model(generating_run):
    """The final model is the best checkpoint; plain inference on it must reproduce that epoch's predictions,
    so the in-training generation (kernels patched in, model switched to eval mode) is the model's own."""
    recipe, out = generating_run
    result = CliRunner().invoke(main, ["eval", str(recipe), "--adapter", str(out / "final_model"), "--set", "dataset.max_eval_samples=4"])
    assert result.exit_code == 0, result.output
    with (out / "eval" / "predictions.csv").open(encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f)) == read_generations(out, best_epoch(final_state(out)))


def test_tensorboard_events_hold_loss_eval_loss_and_the_generation_metrics(generating_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = generating_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "eval/loss", f"eval/{BEST}"} <= set(events.Tags()["scalars"])
    eval_loss = {e.step: e.value for e in events.Scalars("eval/loss")}
    assert eval_loss[0] == pytest.approx(json.loads((out / "metrics.json").read_text())["eval_loss_before"], rel=1e-7)  # float32
    logged = {step: e[f"eval_{BEST}"] for step, e in scored(final_state(out)).items()}
    written = {e.step: e.value for e in events.Scalars(f"eval/{BEST}")}
    assert written.keys() == logged.keys() and all(written[s] == pytest.approx(v, rel=1e-7) for s, v in logged.items())


@pytest.mark.parametrize("task", sorted(GENERATION_METRICS))
def test_metric_names_offered_are_names_task_metrics_returns(task):
    answer = "SWC-107: reentrancy" if task == "classification" else "#Person1#이 우산을 찾는다."
    assert set(GENERATION_METRICS[task]) <= set(task_metrics(task, [answer], [answer]))


@pytest.mark.parametrize("task", ["summary", "qa"])
def test_scoring_does_not_keep_the_morpheme_analyser_for_the_training_after_it(task):
    answer = "#Person1#이 우산을 찾는다."
    assert morphemes(answer)  # loaded
    first = task_metrics(task, [answer], [answer])
    assert _kiwi.cache_info().currsize == 0  # Kiwi (about 0.5 GiB resident) is not carried into the next epoch
    assert task_metrics(task, [answer], [answer]) == first  # and the next evaluation loads it again


@pytest.mark.parametrize("sets, message", [
    (["evaluation.metric_for_best=rouge_sum"],
     "evaluation.metric_for_best: 'rouge_sum' is measured on generated text, and nothing is generated during training"),
    (["evaluation.generate_at_eval=true", "evaluation.metric_for_best=f1"],
     "evaluation.metric_for_best: 'f1' is not a metric of task 'summary'"),
    (["evaluation.generate_at_eval=true", "dataset.eval=null"],
     "evaluation.generate_at_eval: generating during training needs an eval split"),
])
def test_evaluation_section_that_cannot_work_is_refused(tmp_path, sets, message):
    with pytest.raises(FastftError) as caught:
        load_recipe(recipe_for(tmp_path, tmp_path), sets)
    assert str(caught.value).startswith(message)


def test_unknown_metric_name_lists_the_known_ones(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(recipe_for(tmp_path, tmp_path)), "--set", "evaluation.metric_for_best=rouge"])
    assert result.exit_code == 2
    assert "evaluation.metric_for_best: Input should be 'eval_loss', 'rouge_sum'" in result.output


def test_best_metric_direction_and_tensorboard_folder_in_trainer_arguments(tmp_path):
    import torch

    from fastft.training.args import sft_config
    from fastft.training.tensorboard import wants_tensorboard

    by_loss = load_recipe(recipe_for(tmp_path, tmp_path), ["logging.report_to=[tensorboard, mlflow]"])
    args = sft_config(by_loss, str(tmp_path / "checkpoints"), has_eval=True, compute_dtype=torch.float32)
    assert (args.metric_for_best_model, args.greater_is_better) == ("eval_loss", False)
    # Trainer's own TensorBoard writer would pick its folder itself; run.py adds one that writes to the run folder.
    assert args.report_to == ["mlflow"] and wants_tensorboard(by_loss.logging)
    by_rouge = load_recipe(recipe_for(tmp_path, tmp_path), ["evaluation.generate_at_eval=true", f"evaluation.metric_for_best={BEST}"])
    args = sft_config(by_rouge, str(tmp_path / "checkpoints"), has_eval=True, compute_dtype=torch.float32)
    assert (args.metric_for_best_model, args.greater_is_better) == (BEST, True)  # Trainer reads it as eval_<name>
    assert args.report_to == [] and not wants_tensorboard(by_rouge.logging)
