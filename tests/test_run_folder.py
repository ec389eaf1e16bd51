"""One writer per run folder (an OS lock held by the run's process), and output locations that cannot hold a run
refused before any work with one line each."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastft.cli import main
from fastft.runtime.lock import RunFolderLock
from tests.factories import REPO, recipe_for
from tests.test_hostile import assert_one_clean_error
from tests.test_resume import SHORT_RUN, fastft_run, finished, sets
from tests.test_stop import checkpoint_step, wait_for


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_holder(tmp_path, tiny_llama):
    recipe = recipe_for(tmp_path, tiny_llama)
    run_dir = tmp_path / "outputs" / "tiny"
    first = fastft_run(tmp_path, "first")
    wait_for(first, lambda: checkpoint_step(run_dir / "checkpoints") >= 2, "the second run")
    first.send_signal(signal.SIGSTOP)  # holds its lock, frozen, while the second run tries
    try:
        for extra in ([], ["--overwrite"], ["--resume"]):
            second = CliRunner().invoke(main, ["run", str(recipe), *sets(SHORT_RUN), *extra])
            assert_one_clean_error(second.exit_code, second.stderr,
                                   f"the output folder {run_dir} is in use by another fastft run "
                                   f"(process {first.pid} on {socket.gethostname()})")
        assert checkpoint_step(run_dir / "checkpoints") >= 2  # --overwrite deleted nothing
    finally:
        first.send_signal(signal.SIGCONT)
    finished(first, tmp_path, "first")
    RunFolderLock(run_dir).acquire()  # the lock ended with its process


def test_a_lock_refuses_only_other_processes(tmp_path):
    lock = RunFolderLock(tmp_path)
    lock.acquire()
    lock.acquire()  # the same run asking again
    code = "import sys; from pathlib import Path; from fastft.runtime.lock import RunFolderLock; RunFolderLock(Path(sys.argv[1])).acquire()"
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert f"in use by another fastft run (process {os.getpid()} on {socket.gethostname()})" in other.stderr
    lock.release()
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 0


def run_args(tmp_path, model, *items):
    return ["run", str(recipe_for(tmp_path, model)), *sets(items)]


def assert_refused_untouched(result, expect, tmp_path, blocker):
    assert_one_clean_error(result.exit_code, result.stderr, expect)
    assert blocker.read_text() == "in the way"
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("key, shown", [("output.dir", "{file}/tiny"), ("output.logs_dir", "{file}")])
def test_a_file_where_an_output_folder_goes_is_refused_before_any_work(tmp_path, key, shown):
    blocker = tmp_path / "blocker"
    blocker.write_text("in the way")
    # The model and the data do not exist: the output check comes before either is read.
    result = CliRunner().invoke(main, run_args(tmp_path, tmp_path / "no_model", f"{key}={blocker}", "dataset.train=missing.csv"))
    folder = shown.format(file=blocker)
    blocked = "" if folder == str(blocker) else f" cannot be created: {blocker}"
    assert_refused_untouched(result, f"{key} {folder}{blocked} is a file, not a folder", tmp_path, blocker)


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_an_output_folder_on_a_read_only_filesystem_is_refused(tmp_path, read_only_folder):
    result = CliRunner().invoke(main, run_args(tmp_path, tmp_path / "no_model", f"output.dir={read_only_folder / 'runs'}"))
    assert_one_clean_error(result.exit_code, result.stderr,
                           f"output.dir {read_only_folder / 'runs' / 'tiny'} cannot be created: {read_only_folder} is on a read-only filesystem")
    assert not (tmp_path / "logs").exists()


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_an_output_folder_this_user_cannot_write_is_refused():
    # Root ignores permission bits, so this runs fastft as the unprivileged user `nobody`.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        usable = subprocess.run([*NOBODY, sys.executable, "-c", "import fastft.cli"], cwd="/", env=env,
                                capture_output=True).returncode == 0
    except FileNotFoundError:
        usable = False
    if not usable:
        pytest.skip("cannot run this Python as user nobody (setpriv missing, or the interpreter is not readable by it)")
    shared = Path(tempfile.mkdtemp())
    try:
        shared.chmod(0o755)
        recipe = recipe_for(shared, shared / "no_model")
        (shared / "outputs").mkdir(mode=0o755)  # root's, not writable by nobody
        done = subprocess.run([*NOBODY, sys.executable, "-m", "fastft", "run", str(recipe)], cwd=shared, env=env,
                              capture_output=True, text=True, timeout=120)
        assert_one_clean_error(done.returncode, done.stderr,
                               f"output.dir {shared / 'outputs' / 'tiny'} cannot be created: {shared / 'outputs'} is not writable by this user")
        assert not any((shared / "outputs").iterdir()) and not (shared / "logs").exists()
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=True)


def test_eval_generate_merge_and_sweep_outputs_are_checked_first(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("in the way")
    recipe = str(recipe_for(tmp_path, tmp_path / "no_model"))
    cases = [
        (["eval", recipe, "--zero-shot", "--out", str(blocker)], f"--out {blocker} is a file, not a folder"),
        (["generate", recipe, "--zero-shot", "--output", str(tmp_path)], f"--output {tmp_path} is a folder, not a file"),
        (["generate", recipe, "--zero-shot", "--output", str(blocker / "p.csv")], f"--output {blocker} is a file, not a folder"),
        (["merge", "--adapter", str(tmp_path / "no_adapter"), "--out", str(blocker / "merged")],
         f"--out {blocker / 'merged'} cannot be created: {blocker} is a file, not a folder"),
        (["sweep", recipe, "--grid", "lora.r=4,8", "--set", f"output.dir={blocker}"],
         f"output.dir {blocker / 'tiny-sweep'} cannot be created: {blocker} is a file, not a folder"),
    ]
    for args, expect in cases:
        assert_refused_untouched(CliRunner().invoke(main, args), expect, tmp_path, blocker)
