"""`fastft sweep`: every combination of the --grid values trained in turn in this process, each in its own run
folder under <output.dir>/<experiment>-sweep/, then sweep.md and sweep.png comparing them.

Rerunning a sweep picks up where it stopped: a cell whose run finished (metrics.json present) is skipped, one
that stopped after a checkpoint resumes from it, one that stopped before any checkpoint starts over.
"""
import gc
import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import load_recipe
from ..config.optional import check_optional_packages
from ..errors import FastftError
from ..runtime.outputs import CHECKPOINTS, METRICS, last_checkpoint
from ..runtime.writable import check_writable_folder
from .report import REPORT, fmt, headline, read_json, table

GRID_SOURCE = "--grid"
GRID_HINT = "write it as section.key=value1,value2,..., e.g. --grid lora.r=4,8,16"
SWEEP_TABLE = "sweep.md"
SWEEP_CHART = "sweep.png"
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass
class Cell:
    values: dict[str, str]  # grid key -> the value as written on the command line
    recipe: object  # the validated recipe of this cell's run
    status: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.recipe.output.dir) / self.recipe.experiment


def parse_grid(items) -> dict[str, list[str]]:
    """{key: values} from `key=v1,v2` items, in the order given."""
    grid = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise FastftError(f"bad grid {item!r}", where=GRID_SOURCE, hint=GRID_HINT)
        values = [value.strip() for value in split_values(raw)]
        if not all(values):
            raise FastftError(f"grid {item!r} has an empty value", where=GRID_SOURCE, hint=GRID_HINT)
        if key in grid:
            raise FastftError(f"grid key {key!r} is given twice", where=GRID_SOURCE, hint=f"list all its values in one --grid {key}=...")
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise FastftError(f"grid {key!r} lists {', '.join(repeated)} more than once", where=GRID_SOURCE, hint="list each value once")
        grid[key] = values
    return grid


def split_values(raw: str) -> list[str]:
    """Split on the commas outside brackets, so a YAML list or mapping stays one value: r=[q_proj,v_proj],[q_proj]."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(raw):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(raw[start:i])
            start = i + 1
    return values + [raw[start:]]


def cell_name(values: dict[str, str]) -> str:
    """A folder and experiment name: `r-4_quantization-nf4`. Keys are shortened to their last part where that
    stays unambiguous; a value with characters a folder name should not hold is cleaned and tagged with a hash."""
    last = [key.rsplit(".", 1)[-1] for key in values]
    parts = []
    for (key, value), short in zip(values.items(), last):
        label = short if last.count(short) == 1 else key
        safe = _UNSAFE.sub("-", value).strip("-")
        if safe != value:
            safe = f"{safe}-{hashlib.sha1(value.encode()).hexdigest()[:6]}".lstrip("-")
        parts.append(f"{label}-{safe}")
    return "_".join(parts)


def plan(recipe_path: Path, overrides: list[str], grid: dict[str, list[str]]) -> tuple[Path, list[Cell]]:
    """(sweep folder, one validated cell per combination). Every cell is validated, and the packages it needs
    checked, before anything trains."""
    base = load_recipe(recipe_path, overrides)
    sweep_dir = Path(base.output.dir) / f"{base.experiment}-sweep"
    check_writable_folder(sweep_dir, "output.dir")
    check_writable_folder(Path(base.output.logs_dir), "output.logs_dir")
    cells = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        try:
            recipe = load_recipe(recipe_path, [*overrides, *(f"{key}={value}" for key, value in values.items())])
        except FastftError as error:
            raise FastftError(f"grid cell {shown} is not a valid recipe: {error.message}", where=GRID_SOURCE, hint=error.hint or GRID_HINT) from None
        try:
            check_optional_packages(recipe, "train")
        except FastftError as error:
            raise FastftError(f"grid cell {shown}: {error.message}", where=error.where, hint=error.hint) from None
        recipe.experiment = f"{base.experiment}-{cell_name(values)}"
        recipe.output.dir = str(sweep_dir)
        cells.append(Cell(values, recipe))
    return sweep_dir, cells


def run_mode(folder: Path) -> str | None:
    """How `fastft run` should treat a cell's folder; None when its run already finished."""
    if (folder / METRICS).exists():
        return None
    if not folder.exists() or not any(folder.iterdir()):
        return "new"
    return "resume" if last_checkpoint(folder / CHECKPOINTS) else "overwrite"


def run_sweep(recipe_path: Path, grid_items, overrides: list[str], console) -> Path:
    """Train every cell not finished yet, then write the comparison. Returns the path of sweep.md."""
    from ..runtime.runlog import RunLog
    from .run import run

    grid = parse_grid(grid_items)
    sweep_dir, cells = plan(Path(recipe_path), overrides, grid)
    for number, cell in enumerate(cells, 1):
        mode = run_mode(cell.folder)
        console.print(f"sweep cell {number}/{len(cells)}: {cell.values} -> {cell.folder} ({mode or 'finished earlier, skipped'})",
                      highlight=False, soft_wrap=True)
        if mode is None:
            cell.status = "finished earlier"
            continue
        log = RunLog(cell.recipe.output.logs_dir, cell.recipe.experiment, console)
        try:
            run(cell.recipe, recipe_path, log, mode=mode)
            cell.status = {"new": "trained", "resume": "resumed", "overwrite": "restarted"}[mode]
        except FastftError as error:  # one cell's problem (out of memory, a diverged loss) leaves the others to run
            cell.status = f"failed: {error.message}"
            console.print(f"sweep cell {number} failed: {error}", highlight=False, soft_wrap=True)
        finally:
            log.close()
            _release_memory()
    path = write_sweep_table(sweep_dir, grid, cells)
    failed = [cell for cell in cells if cell.status.startswith("failed")]
    if failed:
        raise FastftError(f"{len(failed)} of {len(cells)} sweep cells failed; see {path}",
                          hint="fix the cause and run the same sweep again: finished cells are skipped")
    return path


def _release_memory() -> None:
    import torch

    gc.collect()  # the last cell's model and optimizer state, before the next cell loads its own
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_sweep_table(sweep_dir: Path, grid: dict[str, list[str]], cells: list[Cell]) -> Path:
    metrics = [read_json(cell.folder / METRICS) or {} for cell in cells]
    scores = [headline(m.get("fine_tuned")) for m in metrics]
    score_name = next((score[0] for score in scores if score), None)
    header = [*grid, "status", "eval loss", *([score_name] if score_name else []), "tokens/s", "peak memory (GiB)", "report"]
    rows = []
    for cell, m, score in zip(cells, metrics, scores):
        report = f"[report]({cell.folder.name}/{REPORT})" if (cell.folder / REPORT).exists() else "-"
        memory = f"{fmt(m['peak_memory_gib'])} ({m.get('peak_memory_kind')})" if "peak_memory_gib" in m else None
        rows.append([*cell.values.values(), cell.status, m.get("eval_loss_after"), *([score[1] if score else None] if score_name else []),
                     m.get("train_tokens_per_s"), memory, report])
    note = "" if score_name else ("\n\nNo task metric: set `evaluation.generate_at_eval: true` (e.g. `--set "
                                  "evaluation.generate_at_eval=true`) to score generations in every cell.")
    _plot_cells(sweep_dir / SWEEP_CHART, [cell_name(cell.values) for cell in cells], {
        "eval loss": [m.get("eval_loss_after") for m in metrics],
        **({score_name: [score[1] if score else None for score in scores]} if score_name else {}),
        "train tokens/s": [m.get("train_tokens_per_s") for m in metrics],
        "peak memory (GiB)": [m.get("peak_memory_gib") for m in metrics],
    })
    text = (f"# Sweep: {sweep_dir.name}\n\n{len(cells)} cells, one run folder each in this folder. Eval loss after "
            f"training; tokens/s are non-padding tokens over time inside optimizer steps.{note}\n\n"
            f"{table(header, rows)}\n\n![eval loss, score, throughput and memory per cell]({SWEEP_CHART})\n")
    path = sweep_dir / SWEEP_TABLE
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _plot_cells(path: Path, names: list[str], series: dict[str, list]) -> None:
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no global backend switch

    figure = Figure(figsize=(4 * len(series), 4 + 0.1 * max(len(name) for name in names)), dpi=100)
    for index, (title, values) in enumerate(series.items(), 1):
        axes = figure.add_subplot(1, len(series), index)
        axes.bar(range(len(names)), [value if value is not None else 0.0 for value in values])
        axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
