"""Ctrl-C and SIGTERM stop a real `fastft run` / `fastft sweep` cleanly, and a plain rerun ends where an uninterrupted
run ends: same step losses and adapter within 1e-6 (LoRA dropout on, so RNG, data position, optimizer and scheduler
must all come back)."""
import signal
import time

import pytest

from fastft.runtime.outputs import last_checkpoint
from tests.factories import recipe_for
from tests.test_resume import SHORT_RUN, adapter, fastft_cli, fastft_run, finished, sets, step_log

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama):
    """One uninterrupted run of SHORT_RUN, shared by every test here."""
    folder = tmp_path_factory.mktemp("reference")
    recipe_for(folder, tiny_llama)
    finished(fastft_run(folder, "reference"), folder, "reference")
    return folder / "outputs" / "tiny"


def wait_for(process, ready, what: str) -> None:
    while not ready():
        assert process.poll() is None, f"the run ended before {what}"
        time.sleep(0.005)


def checkpoint_step(checkpoints) -> int:
    found = last_checkpoint(checkpoints) if checkpoints.exists() else None
    return int(found.name.rsplit("-", 1)[1]) if found else 0


def assert_same_as_reference(run_dir, reference_dir, from_step: int) -> None:
    expected, got = step_log(reference_dir), step_log(run_dir)
    assert sorted(got) == list(range(1, 13))
    for step in range(from_step + 1, 13):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    want, have = adapter(reference_dir / "final_model"), adapter(run_dir / "final_model")
    assert want.keys() == have.keys()
    assert max((want[k] - have[k]).abs().max().item() for k in want) <= 1e-6
    assert not list((run_dir / "checkpoints").glob(".partial-*"))


def assert_clean_exit(output: str, code: int) -> None:
    assert "Traceback" not in output and "Aborted" not in output, output
    assert output.rstrip().splitlines()[-1].startswith("stopped"), output
    assert code in EXIT.values()


def stop_once(folder, number, *extra):
    """Run, send `number` once training has saved a checkpoint, check the clean stop; the step it stopped at."""
    checkpoints = folder / "outputs" / "tiny" / "checkpoints"
    process = fastft_run(folder, "stopped", *extra)
    wait_for(process, lambda: checkpoint_step(checkpoints) >= 2, "the signal")
    process.send_signal(number)
    process.wait()
    output = (folder / "stopped.out").read_text()
    assert process.returncode == EXIT[number], output
    assert_clean_exit(output, process.returncode)
    step = checkpoint_step(checkpoints)
    assert 2 <= step < 12
    assert (f"stopped at step {step} of 12; checkpoint saved in {checkpoints / f'checkpoint-{step}'}; "
            "run the same command to continue") in output
    return step


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_current_step_and_a_rerun_ends_like_an_uninterrupted_run(tmp_path, tiny_llama, reference, number):
    recipe_for(tmp_path, tiny_llama)
    step = stop_once(tmp_path, number)
    output = finished(fastft_run(tmp_path, "rerun"), tmp_path, "rerun")
    assert f"resuming from {tmp_path / 'outputs' / 'tiny' / 'checkpoints' / f'checkpoint-{step}'}" in output
    assert_same_as_reference(tmp_path / "outputs" / "tiny", reference, step)


def test_a_second_ctrl_c_stops_at_once_and_a_rerun_resumes_the_last_complete_checkpoint(tmp_path, tiny_llama, reference):
    recipe_for(tmp_path, tiny_llama)
    checkpoints = tmp_path / "outputs" / "tiny" / "checkpoints"
    process = fastft_run(tmp_path, "stopped")
    wait_for(process, lambda: checkpoint_step(checkpoints) >= 2, "the first Ctrl-C")
    process.send_signal(signal.SIGINT)
    wait_for(process, lambda: "Ctrl-C again to stop at once" in (tmp_path / "stopped.out").read_text(), "the second Ctrl-C")
    process.send_signal(signal.SIGINT)
    process.wait()
    output = (tmp_path / "stopped.out").read_text()
    assert process.returncode == 130, output
    assert_clean_exit(output, process.returncode)
    step = checkpoint_step(checkpoints)
    assert f"stopped at once; last complete checkpoint: {checkpoints / f'checkpoint-{step}'}" in output
    assert "stopped at step" not in output  # the clean stop never finished

    rerun = finished(fastft_run(tmp_path, "rerun"), tmp_path, "rerun")
    assert f"resuming from {checkpoints / f'checkpoint-{step}'}" in rerun
    assert_same_as_reference(tmp_path / "outputs" / "tiny", reference, step)


def fastft_sweep(folder, name):
    """The first cell trains exactly the reference run; the second is a short one."""
    return fastft_cli(folder, name, "sweep", str(folder / "tiny.yaml"), *sets(SHORT_RUN), "--grid", "training.max_steps=12,2")


def test_ctrl_c_stops_the_sweep_cell_in_progress_and_a_rerun_continues_it(tmp_path, tiny_llama, reference):
    recipe_for(tmp_path, tiny_llama)
    cell = tmp_path / "outputs" / "tiny-sweep" / "tiny-max_steps-12"
    process = fastft_sweep(tmp_path, "stopped")
    wait_for(process, lambda: checkpoint_step(cell / "checkpoints") >= 2, "the signal")
    process.send_signal(signal.SIGINT)
    process.wait()
    output = (tmp_path / "stopped.out").read_text()
    assert process.returncode == 130, output
    assert_clean_exit(output, process.returncode)
    step = checkpoint_step(cell / "checkpoints")
    assert f"stopped at step {step} of 12" in output
    assert not (tmp_path / "outputs" / "tiny-sweep" / "tiny-max_steps-2").exists()  # the sweep stopped with its cell

    rerun = fastft_sweep(tmp_path, "rerun")
    output = finished(rerun, tmp_path, "rerun")
    assert "sweep cell 1/2" in output and f"resuming from {cell / 'checkpoints' / f'checkpoint-{step}'}" in output
    assert_same_as_reference(cell, reference, step)
    assert (tmp_path / "outputs" / "tiny-sweep" / "tiny-max_steps-2" / "metrics.json").exists()
