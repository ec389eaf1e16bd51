"""Peak extra memory of linear_cross_entropy (PyTorch path) at a Gemma-sized vocabulary.

Measured in a fresh subprocess as peak RSS (ru_maxrss) during forward+backward minus ru_maxrss once the
inputs are allocated and touched. RSS rather than torch's profiler because it also sees memory torch does not
track (BLAS workspaces, allocator slack), so it can only overstate our extra memory; a fresh process, so no
earlier test's peak hides ours. No warm-up call: whatever the first call costs (lazy imports, thread pools)
is charged to it.
"""
import json
import os
import subprocess
import sys

import pytest

N, V, H = 4096, 262_144, 64
# F.cross_entropy(hidden @ weight.T) holds at least the fp32 logits (its log-softmax and gradient are more).
BASELINE_BYTES = N * V * 4

SCRIPT = f"""
import importlib, json, resource
import torch
lce = importlib.import_module("fastft.kernels.linear_cross_entropy")
gen = torch.Generator().manual_seed(0)
hidden = torch.randn({N}, {H}, generator=gen).requires_grad_()
weight = (torch.randn({V}, {H}, generator=gen) * 0.1).requires_grad_()
labels = torch.randint(0, {V}, ({N},), generator=gen)
labels[torch.randperm({N}, generator=gen)[: {N} * 9 // 10]] = -100
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = lce.linear_cross_entropy(hidden, weight, labels, softcap=30.0)
loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"extra_bytes": (after - before) * 1024, "loss": loss.item(),
                  "grads_finite": bool(hidden.grad.isfinite().all() and weight.grad.isfinite().all())}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_is_a_fraction_of_full_logits():
    env = dict(os.environ, FASTFT_KERNEL_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["grads_finite"] and 0.0 < result["loss"] < 30.0
    assert result["extra_bytes"] < BASELINE_BYTES / 10, f"{result['extra_bytes'] / 2**20:.0f} MiB extra"
