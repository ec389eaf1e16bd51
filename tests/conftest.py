import os

# The interpreter flag must be set before anything imports triton. Model-level tests run the
# PyTorch kernel path (fast on CPU); kernel tests opt into Triton with the `triton_backend` fixture.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTFT_KERNEL_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "triton")


@pytest.fixture
def torch_backend(monkeypatch):
    monkeypatch.setenv("FASTFT_KERNEL_BACKEND", "torch")


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> torch.device:
    """Where a device-aware test runs: the CPU always, a CUDA GPU where there is one and Triton compiles for it.
    The interpreter flag holds for the whole process, so a GPU's tests run apart:
    `TRITON_INTERPRET=0 python -m pytest -k cuda tests/test_patch_parity.py tests/test_autocast_step.py`."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA GPU here")
        if os.environ["TRITON_INTERPRET"] == "1":
            pytest.skip("TRITON_INTERPRET=1 would run the GPU's kernels in Python; run with TRITON_INTERPRET=0")
    return torch.device(request.param)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A saved 2-layer random Llama with a BPE tokenizer trained on the Korean sample (Llama-3 chat tokens)."""
    from tests.factories import tiny_llama_checkpoint

    return tiny_llama_checkpoint(tmp_path_factory.mktemp("tiny_llama"))


# Tests over ~5 s on a 2-core CPU (measured with --durations=0): they train, start real processes, or load real
# models and tokenizers. `pytest -m "not slow"` leaves them out for a quick loop; CI runs everything.
SLOW_MODULES = {
    "test_bench", "test_distributed", "test_epoch_metrics", "test_eval", "test_generate", "test_guards", "test_loss",
    "test_merge", "test_patch_parity", "test_patch_training", "test_pinned_loss", "test_report", "test_resume",
    "test_sweep", "test_train_tiny", "test_train_tokens", "test_data_preview",
    "test_autocast_step", "test_self_check", "test_doctor", "test_stop", "test_tracking", "test_push", "test_export",
    "test_save_guards", "test_run_folder", "test_fresh_start", "test_quiet_startup", "test_merged_generation",
}
SLOW_TESTS = {
    "test_unsloth_backend_without_gpu_is_refused_before_anything_is_written",  # converts the packaged model once
    "test_resume_without_a_run_says_there_is_nothing_to_resume",
    "test_broken_data", "test_odd_but_valid_data", "test_broken_data_in_a_real_process",
    "test_python_tag_in_a_real_process_runs_nothing", "test_validate_never_crashes_on_mutated_recipes",
    "test_pickle_only_checkpoint_is_refused_before_anything_is_written",
    "test_checkpoint_code_runs_only_when_the_recipe_trusts_it",
    "test_chat_trains_exactly_the_answers_and_end_of_turn",  # real tokenizers of every family
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
