"""Training with the kernels: 30 optimiser steps track the unpatched run, and the adapter is plain PEFT.

Both runs start from the same seeded weights and see the same batches; dropout is 0 so no RNG is consumed
differently (the kernels draw dropout masks from their own hash, not from PEFT's nn.Dropout).
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from fastft.patching import apply_kernels
from fastft.patching.loss import prompt_masked_loss
from tests.kernels.numerics import assert_rel_close
from tests.test_patch_models import FAMILIES, lora_grads, prompt_masked_batch, tiny_base, tiny_peft, with_lora

STEPS = 30
BATCHES = [prompt_masked_batch(seed=s) for s in range(4)]


def train(model, steps: int, lr: float = 3e-3) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    losses = []
    for step in range(steps):
        loss = prompt_masked_loss(model, BATCHES[step % len(BATCHES)])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", FAMILIES)
def test_thirty_steps_follow_the_unpatched_curve(family, torch_backend):
    plain = train(tiny_peft(family), STEPS)
    patched_model = tiny_peft(family)
    apply_kernels(patched_model)
    patched = train(patched_model, STEPS)
    assert plain[-1] < 0.9 * plain[0], "the run must actually learn, or the comparison says little"
    for step, (ours, ref) in enumerate(zip(patched, plain)):
        assert abs(ours - ref) <= 1e-3 * abs(ref), f"step {step}: {ours} vs {ref}"


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_recomputes_the_same_dropout_masks(reentrant, torch_backend):
    """Checkpointed layers run forward twice; the kernels draw their dropout seed from torch's RNG, whose state
    checkpointing restores for the recomputation, so masks, loss and gradients are the same as without it."""
    runs = []
    for checkpointing in (False, True):
        model = with_lora(tiny_base("gemma3"), dropout=0.1)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
            model.enable_input_require_grads()
        apply_kernels(model)
        torch.manual_seed(3)
        loss = prompt_masked_loss(model, BATCHES[0])
        loss.backward()
        runs.append((loss.detach(), lora_grads(model)))
    with torch.no_grad():
        no_dropout = prompt_masked_loss(model.eval(), BATCHES[0])
    (loss, grads), (checkpointed_loss, checkpointed_grads) = runs
    assert abs(loss - no_dropout) > 1e-4 * no_dropout, "dropout must be active, or masks are not being tested"
    assert torch.equal(checkpointed_loss, loss)
    for name, grad in grads.items():
        assert torch.equal(checkpointed_grads[name], grad), name


# Runs in a fresh interpreter that never imports fastft: what a user of the saved adapter would do.
_PLAIN_PEFT = textwrap.dedent("""
    import json, sys
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base_dir, adapter_dir, io_file = sys.argv[1:4]
    io = torch.load(io_file)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter_dir)
    with torch.no_grad():
        io["logits"] = model.eval()(input_ids=io["input_ids"], attention_mask=io["attention_mask"]).logits
    torch.save(io, io_file)
    print(json.dumps({"fastft_imported": any(m.split(".")[0] == "fastft" for m in sys.modules)}))
""")


def test_adapter_trained_with_kernels_loads_in_plain_peft(tmp_path, torch_backend):
    family = "gemma3"  # the default recipe's family
    tiny_base(family).save_pretrained(tmp_path / "base")
    model = with_lora(tiny_base(family), dropout=0.1)  # dropout exercises the kernel's own masks in training
    apply_kernels(model)
    train(model, 5, lr=2e-2)
    model.save_pretrained(tmp_path / "adapter")
    batch = prompt_masked_batch(seed=9)
    with torch.no_grad():
        ours = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.save({k: batch[k] for k in ("input_ids", "attention_mask")}, tmp_path / "io.pt")
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_PEFT, str(tmp_path / "base"), str(tmp_path / "adapter"), str(tmp_path / "io.pt")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"fastft_imported": False}
    assert_rel_close(ours, torch.load(tmp_path / "io.pt")["logits"], tol=1e-5, name="logits")
