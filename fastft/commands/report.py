"""report.md and training_curve.png of a finished run. report.md is built only from the files in its output folder,
so it can be rebuilt (or read by `fastft sweep`) without the process that trained."""
import csv
import json
from pathlib import Path

import yaml

from ..runtime.outputs import GENERATIONS, METRICS, RECIPE_FILE
from ..runtime.phases import TOTAL, duration, phase_label
from .summary import versions

REPORT = "report.md"
CURVE = "training_curve.png"
LOG_HISTORY = "log_history.json"
DATA_STATS = "data_stats.json"
SAMPLE_ROWS = 5
MAX_CELL_CHARS = 300
# The score a task is judged by, first match wins: ROUGE sum (summary), token F1 (QA), macro-F1 (classification).
HEADLINE_SCORES = ("rouge_sum", "f1", "macro_f1", "accuracy")
DATA_COLUMNS = ("examples", "rendered", "tokens", "trained_tokens", "max_length", "prompt_truncated", "answer_truncated", "dropped")


def write_run_record(output_dir: Path, log_history: list[dict], data: dict) -> None:
    """Save what the report needs beyond metrics.json, and the training curve; write_report follows once
    metrics.json is written."""
    output_dir = Path(output_dir)
    _write_json(output_dir / LOG_HISTORY, log_history)
    _write_json(output_dir / DATA_STATS, data)
    plot_curve(loss_curves(log_history), output_dir / CURVE)


def write_report(output_dir: Path) -> Path:
    output_dir = Path(output_dir)
    recipe_text = (output_dir / RECIPE_FILE).read_text(encoding="utf-8")
    metrics = read_json(output_dir / METRICS) or {}
    sections = [
        f"# Run report: {yaml.safe_load(recipe_text).get('experiment', output_dir.name)}",
        _results_section(metrics),
        _task_section(metrics, output_dir),
        f"## Training curve\n\n![train and eval loss]({CURVE})",
        _usage_section(metrics),
        _time_section(metrics),
        _data_section(read_json(output_dir / DATA_STATS) or {}),
        _samples_section(output_dir / GENERATIONS),
        f"## Library versions\n\n{versions()}",
        f"## Resolved recipe\n\n```yaml\n{recipe_text.rstrip()}\n```",
    ]
    path = output_dir / REPORT
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):  # large rates in full (12,345.6), small scores and losses to 4 digits
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def headline(scores: dict | None) -> tuple[str, float] | None:
    """(name, value) of the task's main score in a dict of task metrics, or None."""
    for name in HEADLINE_SCORES:
        if scores and isinstance(scores.get(name), (int, float)):
            return name, scores[name]
    return None


def loss_curves(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{label: [(step, loss)]}. The loss before training is the history's step-0 evaluation (Trainer's eval_on_start);
    an evaluation repeated at one step is kept once."""
    train = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    evaluated = {entry["step"]: entry["eval_loss"] for entry in history if "eval_loss" in entry}
    return {"train loss": train, "eval loss": sorted(evaluated.items())}


def plot_curve(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no global backend switch

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for label, points in curves.items():
        if points:
            axes.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    if axes.lines:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no losses were logged", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(path)


def _results_section(metrics: dict) -> str:
    rows = [[label, metrics.get(key)] for key, label in (
        ("eval_loss_before", "eval loss before training"),
        ("eval_loss_after", "eval loss after training"),
        ("train_loss", "mean train loss"),
        ("train_runtime_s", "trainer runtime (s, evaluation included)"),
        ("all_masked_batches_skipped", "batches skipped (no trained token)"),
    ) if key in metrics]
    return "## Results\n\n" + table(["", "value"], rows)


def _task_section(metrics: dict, output_dir: Path) -> str:
    zero_shot, fine_tuned = metrics.get("zero_shot") or {}, metrics.get("fine_tuned") or {}
    if not zero_shot and not fine_tuned:
        return (
            "## Task metrics\n\nNot measured in this run. Set `evaluation.generate_at_eval: true` in the recipe to "
            "score generations every epoch, or run `fastft eval RECIPE --zero-shot` and "
            f"`fastft eval RECIPE --adapter {output_dir / 'final_model'}`."
        )
    names = list(dict.fromkeys([*zero_shot, *fine_tuned]))
    return "## Task metrics: zero-shot vs fine-tuned\n\n" + table(
        ["metric", "zero-shot", "fine-tuned"], [[name, zero_shot.get(name), fine_tuned.get(name)] for name in names])


def _usage_section(metrics: dict) -> str:
    rows = [
        ["train tokens/s (non-padding tokens over time inside optimizer steps)", metrics.get("train_tokens_per_s")],
        ["train tokens (non-padding)", metrics.get("train_tokens")],
        [f"peak memory, GiB ({metrics.get('peak_memory_kind', 'not measured')})", metrics.get("peak_memory_gib")],
    ]
    return "## Throughput and memory\n\n" + table(["", "value"], rows)


def _time_section(metrics: dict) -> str:
    phases = metrics.get("phases_s")
    if not phases:
        return "## Where the time went\n\nNot measured in this run."
    total = phases[TOTAL]
    rows = [[phase_label(name), duration(seconds), round(seconds, 2), f"{100 * seconds / total:.0f}%" if total else "-"]
            for name, seconds in phases.items()]
    return "## Where the time went\n\n" + table(["phase", "time", "seconds", "share"], rows)


def _data_section(stats: dict) -> str:
    if not stats:
        return "## Data\n\nNo data statistics were saved with this run."
    rows = [[split, *(numbers.get(column) for column in DATA_COLUMNS)] for split, numbers in stats.items()]
    sources = "\n".join(f"- {split}: `{numbers.get('path')}`" for split, numbers in stats.items())
    return "## Data\n\n" + table(["split", *(c.replace("_", " ") for c in DATA_COLUMNS)], rows) + "\n\n" + sources


def _samples_section(folder: Path) -> str:
    """References beside the predictions before training (epoch_0) and at the last evaluation (the newest file:
    epoch_<k>, or step_<n> when evaluations follow training.save_steps)."""
    files = sorted(folder.glob("*.csv"), key=lambda path: (path.stat().st_mtime_ns, path.name))
    if not files:
        return "## Sample predictions\n\nNo generations were saved with this run."
    first = folder / "epoch_0.csv" if (folder / "epoch_0.csv").exists() else files[0]
    shown = [first] + ([files[-1]] if files[-1] != first else [])
    columns = [_read_generations(path) for path in shown]
    ids = list(columns[-1])[:SAMPLE_ROWS]
    rows = [[example_id, _cell(columns[-1][example_id]["reference"]),
             *(_cell(column.get(example_id, {}).get("prediction", "")) for column in columns)] for example_id in ids]
    return "## Sample predictions\n\n" + table(["id", "reference", *(path.stem.replace("_", " ") for path in shown)], rows)


def _read_generations(path: Path) -> dict[str, dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def _cell(text: str) -> str:
    """One markdown table cell: pipes escaped, line breaks as <br>, long texts cut."""
    text = text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
