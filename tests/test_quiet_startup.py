"""Start-up and end of a run read honestly: no third-party line that looks like an error, one line naming the
optional accelerations that are absent, and task metrics as rounded zero-shot -> fine-tuned rows."""
import os
import subprocess
import sys

from fastft.commands.summary import metric_rows
from tests.factories import recipe_for
from tests.test_resume import SHORT_RUN, sets

NOISE = ("warning", "failed to load", "deprecated")


def test_a_run_prints_no_third_party_warning_and_ends_on_rounded_task_metrics(tmp_path, tiny_llama):
    recipe = recipe_for(tmp_path, tiny_llama)
    # The recipe's eval split stays (SHORT_RUN drops it): generation at step 0 and at the end gives both task columns.
    items = [*(item for item in SHORT_RUN if item != "dataset.eval=null"), "dataset.max_eval_samples=2", "training.max_steps=2",
             "training.gradient_checkpointing=true", "evaluation.generate_at_eval=true", "evaluation.max_samples=2",
             "generation.max_new_tokens=4"]
    env = dict(os.environ, TRITON_INTERPRET="1", FASTFT_KERNEL_BACKEND="torch", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "fastft", "run", str(recipe), *sets(items)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    noisy = [line for line in output.splitlines() if any(word in line.lower() for word in NOISE)]
    assert not noisy, noisy
    assert "  optional   flash-attn, unsloth not installed; bitsandbytes 4-bit unused (model.quantization: none)" in output
    table = output[output.index("fastft run finished"):]
    assert "zero-shot → fine-tuned" in table and "rouge_sum_morpheme" in table
    assert "{'" not in table  # no dict repr


def test_the_bitsandbytes_probe_message_is_kept_off_the_terminal(tmp_path):
    """bitsandbytes logs the probe on CPUs with AVX512-BF16 when the `kernels` package is absent; this machine may not
    have one, so the probe is run again with the CPU check answering yes. Without fastft's filter it shows."""
    probe = ("import importlib, bitsandbytes.functional as F; F.has_avx512bf16 = lambda: True; "
             "import bitsandbytes.backends.cpu.ops as ops; importlib.reload(ops)")
    bare = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert "Failed to load CPU gemm_4bit_forward" in bare.stderr  # the message exists, under the logger filtered
    quiet = subprocess.run([sys.executable, "-c", "import fastft.cli; " + probe], cwd=tmp_path, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert "Failed to load" not in quiet.stderr  # (re-registering bitsandbytes' ops warns; a real start-up does not)


def test_task_metrics_end_as_rounded_rows():
    metrics = {"train_loss": 6.393213, "all_masked_batches_skipped": 0,
               "zero_shot": {"rouge1": 1.1627906652244466, "rouge_sum": 2.3255813304488933},
               "fine_tuned": {"rouge1": 2.2222221728395075, "rouge_sum": 5.353535221050917, "unparsed": 3},
               "eval_loss_after": 6.34349}
    assert metric_rows(metrics) == [
        ("train_loss", "6.3932"), ("all_masked_batches_skipped", "0"),
        ("task metrics", "zero-shot → fine-tuned"),
        ("  rouge1", "1.16 → 2.22"), ("  rouge_sum", "2.33 → 5.35"), ("  unparsed", "- → 3"),
        ("eval_loss_after", "6.3435"),
    ]
