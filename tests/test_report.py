"""A run's report.md, training curve, throughput and peak memory, checked against the run's own files and
against the encoded data recomputed here."""
import csv
import json
import os
import shutil
import struct

import pytest
from click.testing import CliRunner

from fastft.cli import main
from fastft.commands.report import loss_curves, write_report
from tests.factories import recipe_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES = ["--set", "dataset.max_train_samples=12", "--set", "dataset.max_eval_samples=4", "--set", "training.epochs=1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("report")
    recipe = recipe_for(tmp, tiny_llama)
    result = CliRunner().invoke(main, ["run", str(recipe), *SIZES])
    assert result.exit_code == 0, result.output
    return recipe, tmp / "outputs" / "tiny"


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table under `heading`."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_report_shows_the_recipe_metrics_and_a_png_curve(finished_run):
    _, out = finished_run
    report = (out / "report.md").read_text(encoding="utf-8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "resolved_recipe.yaml").read_text(encoding="utf-8").strip() in report
    results = dict(_table_rows(report, "## Results"))
    assert float(results["eval loss before training"]) == pytest.approx(metrics["eval_loss_before"], rel=1e-3)
    assert float(results["eval loss after training"]) == pytest.approx(metrics["eval_loss_after"], rel=1e-3)
    usage = dict(_table_rows(report, "## Throughput and memory"))
    assert float(usage["train tokens/s (non-padding tokens over time inside optimizer steps)"].replace(",", "")) == pytest.approx(metrics["train_tokens_per_s"], rel=1e-3)
    assert float(usage["peak memory, GiB (rss)"]) == pytest.approx(metrics["peak_memory_gib"], rel=1e-3)
    assert "fastft eval RECIPE --zero-shot" in report  # no task metrics in this run: the report says how to get them

    png = (out / "training_curve.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (700, 400)
    curves = loss_curves(json.loads((out / "log_history.json").read_text()))
    assert curves["eval loss"][0] == (0, metrics["eval_loss_before"])
    assert curves["eval loss"][-1][1] == metrics["eval_loss_after"] and len(curves["train loss"]) >= 2


def test_data_statistics_match_the_encoded_dataset(finished_run):
    from fastft.config.loader import load_recipe
    from fastft.data.pipeline import build_splits
    from fastft.models.loader import load_tokenizer

    recipe_path, out = finished_run
    recipe = load_recipe(recipe_path, SIZES[1::2])
    train, evaluation = build_splits(recipe.dataset, load_tokenizer(recipe.model.name)[0], recipe_path)
    rows = {row[0]: row[1:] for row in _table_rows((out / "report.md").read_text(encoding="utf-8"), "## Data")}
    for name, split in (("train", train), ("eval", evaluation)):
        tokens = sum(len(ids) for ids in split.dataset["input_ids"])
        trained = sum(label != -100 for labels in split.dataset["labels"] for label in labels)
        examples, _, shown_tokens, shown_trained, longest, *_ = (int(cell.replace(",", "")) for cell in rows[name])
        assert (examples, shown_tokens, shown_trained, longest) == (
            len(split.dataset), tokens, trained, max(len(ids) for ids in split.dataset["input_ids"]))
    # Every non-padding token of one epoch went through the model once: the throughput's numerator.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_tokens"] == sum(len(ids) for ids in train.dataset["input_ids"])
    assert metrics["peak_memory_kind"] == "rss" and metrics["peak_memory_gib"] > 0


def test_report_shows_task_metrics_and_escaped_sample_predictions(finished_run, tmp_path):
    _, out = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("final_model", "checkpoints"))
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.update(zero_shot={"rouge_sum": 12.5, "rouge1": 7.25}, fine_tuned={"rouge_sum": 40.75, "rouge1": 20.5})
    (copy / "metrics.json").write_text(json.dumps(metrics))
    (copy / "generations").mkdir()
    for order, name in enumerate(("epoch_0", "epoch_1", "step_7")):  # the newest file is the last evaluation
        path = copy / "generations" / f"{name}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "prediction", "reference"])
            writer.writerows([f"dev_{i}", f"guess {name} a|b\nline two", f"ref {i}"] for i in range(8))
        os.utime(path, ns=(order * 10**9, order * 10**9))

    report = write_report(copy).read_text(encoding="utf-8")
    assert _table_rows(report, "## Task metrics") == [["rouge_sum", "12.5", "40.75"], ["rouge1", "7.25", "20.5"]]
    samples = _table_rows(report, "## Sample predictions")
    assert report.split("## Sample predictions", 1)[1].splitlines()[2] == "| id | reference | epoch 0 | step 7 |"
    assert len(samples) == 5
    assert samples[0] == ["dev_0", "ref 0", "guess epoch_0 a\\|b<br>line two", "guess step_7 a\\|b<br>line two"]


def test_peak_memory_restarts_so_runs_in_one_process_report_their_own():
    from fastft.training.usage import peak_memory_bytes, reset_peak_memory

    block = bytearray(512 * 2**20)  # touched pages: they count in the resident set
    before = peak_memory_bytes("cpu")
    del block
    assert reset_peak_memory("cpu") == "rss"
    assert peak_memory_bytes("cpu") < before - 256 * 2**20
