"""`fastft sweep` on the tiny model: one run folder per grid cell, sweep.md matching each cell's metrics.json,
resumable, and one clear message for every malformed grid."""
import json

import pytest
from click.testing import CliRunner

from fastft.cli import main
from fastft.commands.sweep import cell_name, split_values
from tests.factories import REPO, recipe_for

SHORT = ["--set", "training.max_steps=2", "--set", "dataset.max_train_samples=8", "--set", "dataset.max_eval_samples=4"]
GRID = ["--grid", "lora.r=2,4", "--grid", "training.learning_rate=1e-3,3e-3"]
CELLS = {"r-2_learning_rate-1e-3": ("2", "1e-3"), "r-2_learning_rate-3e-3": ("2", "3e-3"),
         "r-4_learning_rate-1e-3": ("4", "1e-3"), "r-4_learning_rate-3e-3": ("4", "3e-3")}


def _rows(sweep_md: str) -> list[list[str]]:
    lines = [line for line in sweep_md.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def _sweep(recipe):
    return CliRunner().invoke(main, ["sweep", str(recipe), *GRID, *SHORT])


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("sweep")
    recipe = recipe_for(tmp, tiny_llama)
    result = _sweep(recipe)
    assert result.exit_code == 0, result.output
    return recipe, tmp / "outputs" / "tiny-sweep"


def test_every_cell_trains_in_its_own_folder_and_the_table_matches_its_metrics(swept):
    recipe, sweep_dir = swept
    rows = _rows((sweep_dir / "sweep.md").read_text(encoding="utf-8"))
    assert len(rows) == 4
    for row in rows:
        r, learning_rate, status, eval_loss, tokens_per_s, memory, report = row
        folder = sweep_dir / f"tiny-{cell_name({'lora.r': r, 'training.learning_rate': learning_rate})}"
        metrics = json.loads((folder / "metrics.json").read_text())
        resolved = (folder / "resolved_recipe.yaml").read_text()
        assert f"r: {r}\n" in resolved and f"learning_rate: {float(learning_rate)}\n" in resolved
        assert status == "trained"
        assert float(eval_loss) == pytest.approx(metrics["eval_loss_after"], rel=1e-3)
        assert float(tokens_per_s.replace(",", "")) == pytest.approx(metrics["train_tokens_per_s"], rel=1e-3)
        assert memory.endswith("(rss)")
        assert report == f"[report]({folder.name}/report.md)" and (folder / "report.md").exists()
    assert {folder.name for folder in sweep_dir.iterdir() if folder.is_dir()} == {f"tiny-{name}" for name in CELLS}
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_sweep_skips_finished_cells_and_resumes_or_restarts_stopped_ones(swept):
    recipe, sweep_dir = swept
    folders = sorted(folder for folder in sweep_dir.iterdir() if folder.is_dir())
    finished = {folder: (folder / "metrics.json").stat().st_mtime_ns for folder in folders[2:]}
    (folders[0] / "metrics.json").unlink()  # stopped after its checkpoint: resumes
    (folders[1] / "metrics.json").unlink()
    for checkpoint in (folders[1] / "checkpoints").iterdir():  # stopped before any checkpoint: starts over
        for path in sorted(checkpoint.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        checkpoint.rmdir()

    result = _sweep(recipe)
    assert result.exit_code == 0, result.output
    statuses = {row[0] + "," + row[1]: row[2] for row in _rows((sweep_dir / "sweep.md").read_text(encoding="utf-8"))}
    assert sorted(statuses.values()) == ["finished earlier", "finished earlier", "restarted", "resumed"], statuses
    assert all((folder / "metrics.json").stat().st_mtime_ns == mtime for folder, mtime in finished.items())
    assert all((folder / "metrics.json").exists() for folder in folders)


@pytest.mark.parametrize("grid, messages", [
    (["lora.r"], ["bad grid 'lora.r'"]),
    (["=4,8"], ["bad grid '=4,8'"]),
    (["lora.r="], ["grid 'lora.r=' has an empty value"]),
    (["lora.r=4,,8"], ["grid 'lora.r=4,,8' has an empty value"]),
    (["lora.r=4", "lora.r=8"], ["grid key 'lora.r' is given twice"]),
    (["lora.r=4,8,4"], ["grid 'lora.r' lists 4 more than once"]),
    (["lora.rr=4,8"], ["grid cell lora.rr=4 is not a valid recipe", "did you mean 'lora.r'?"]),
    (["lora.r=4,zero"], ["grid cell lora.r=zero is not a valid recipe", "lora.r"]),
])
def test_bad_grids_are_refused_before_anything_runs(tmp_path, grid, messages):
    recipe = REPO / "recipes" / "gemma3_270m_ko_summary.yaml"
    args = ["sweep", str(recipe), "--set", f"output.dir={tmp_path / 'out'}", "--set", f"output.logs_dir={tmp_path / 'logs'}"]
    result = CliRunner().invoke(main, [*args, *(f"--grid={item}" for item in grid)])
    assert result.exit_code == 2, result.output
    assert all(message in result.output for message in messages) and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_values_split_outside_brackets_and_cell_names_are_safe_and_distinct():
    assert split_values("[q_proj,v_proj],[q_proj],{a: 1, b: 2}") == ["[q_proj,v_proj]", "[q_proj]", "{a: 1, b: 2}"]
    names = {cell_name({"lora.target_modules": value, "model.quantization": "nf4"})
             for value in ("[q_proj,v_proj]", "[q_proj, v_proj]", "q-proj-v-proj")}
    assert len(names) == 3
    assert all(name.replace("-", "").replace("_", "").replace(".", "").isalnum() for name in names)
    # Same last key part in two sections: the full keys keep the names apart.
    assert cell_name({"lora.dropout": "0.1", "other.dropout": "0.2"}) == "lora.dropout-0.1_other.dropout-0.2"
