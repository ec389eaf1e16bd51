#!/usr/bin/env bash
# Proves the README's first command on a fresh virtual environment: its install line exactly as README.md writes
# it (only the `demo` extra), then a short real run of the default recipe with generation on, and a zero-shot eval,
# with an empty model cache. A package the default path imports but `demo` does not install fails here.
set -euo pipefail
cd "$(dirname "$0")/.."

first=$(awk '/^```bash$/ {block++; next} /^```$/ {next} block == 1 {print; exit}' README.md)
install=${first%% && fastft run *}
[[ "$install" != "$first" ]] || { echo "README's first command has no '&& fastft run': $first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
export FASTFT_CACHE="$work/cache"

echo "== fresh venv: $install"
SECONDS=0
if ! eval "$install" > "$work/install.log" 2>&1; then
    grep -v "^WARNING: Location" "$work/install.log" | tail -40
    exit 1
fi
echo "installed in ${SECONDS}s"

short=(--set training.max_steps=3 --set evaluation.max_samples=2 --set generation.max_new_tokens=16
       --set "output.dir=$work/outputs" --set "output.logs_dir=$work/logs")
SECONDS=0
fastft run recipes/gemma3_270m_ko_summary.yaml --debug "${short[@]}"
test -s "$work/outputs/gemma3_270m_ko_summary/report.md"
test -s "$work/outputs/gemma3_270m_ko_summary/final_model/adapter_config.json"
echo "short default run in ${SECONDS}s"

SECONDS=0
fastft eval recipes/gemma3_270m_ko_summary.yaml --zero-shot --set dataset.max_eval_samples=3 "${short[@]}"
echo "zero-shot eval in ${SECONDS}s"
