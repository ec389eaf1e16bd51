#!/bin/bash
# What one GPU run proves, in one command from the repository root (about 3 minutes on an H200):
#   bash bench/gpu_proof.sh [OUT_DIR]
# 1. bench/gpu_check.py --skip-throughput: every kernel at bf16 on Llama-3.2-3B shapes against its fp32 reference;
# 2. the parity and autocast-step tests on CUDA, Triton compiled for the GPU (not the interpreter);
# 3. `fastft run` end to end on a tiny random Llama and the dev sample, LoRA and QLoRA (NF4).
# Logs and JSON go to OUT_DIR (default bench/results/gpu-proof); exit 1 when a part fails.
set -o pipefail
out=${1:-bench/results/gpu-proof}
mkdir -p "$out"
export TRITON_INTERPRET=0 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
failed=0
python3 bench/gpu_check.py --skip-throughput --json "$out/gpu_check.json" > "$out/gpu_check.log" 2>&1 || failed=1
grep -E "PASS|FAIL|capability" "$out/gpu_check.log"
python3 -m pytest -v -p no:cacheprovider -k cuda tests/test_patch_parity.py tests/test_autocast_step.py \
    > "$out/steps-cuda.log" 2>&1 || failed=1
grep -E "passed|failed|skipped" "$out/steps-cuda.log" | tail -1
work=$(mktemp -d)
recipe=$(python3 -c "
from pathlib import Path
from tests.factories import recipe_for, tiny_llama_checkpoint
print(recipe_for(Path('$work'), tiny_llama_checkpoint(Path('$work') / 'model')))" 2>/dev/null | tail -1)
for method in lora qlora; do
    flag=$([ $method = qlora ] && echo --use-qlora)
    python3 -m fastft run "$recipe" $flag --set dataset.max_train_samples=24 --set dataset.max_eval_samples=8 \
        > "$out/run-tiny-$method.log" 2>&1 || failed=1
    grep -E "self-check|eval loss (before|after)" "$out/run-tiny-$method.log"
    rm -rf "$work/outputs" "$work/logs"
done
rm -rf "$work"
exit $failed
