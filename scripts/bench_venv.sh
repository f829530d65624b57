#!/usr/bin/env bash
# The benchmark venv, $LLM_RS_CACHE/bench-venv: the full torch wheel (the project
# venv holds libtorch without torch's CUDA wheels, so it cannot `import torch`),
# tiktoken, and the `# bench:` reference pins of environment.yml (the book's own
# code, Hugging Face transformers). Made once (~3 GB download), then a stamp check.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
bench_venv="$LLM_RS_CACHE/bench-venv"
wanted="$(python3 scripts/pins.py get torch) $(python3 scripts/pins.py get tiktoken) $(python3 scripts/pins.py bench | tr '\n' ' ')"
if [ "$(cat "$bench_venv/.stamp" 2>/dev/null)" != "$wanted" ]; then
    python3 -m venv "$bench_venv"
    pip=("$bench_venv/bin/python" -m pip install --disable-pip-version-check -q)
    "${pip[@]}" "torch==$(python3 scripts/pins.py get torch)" "tiktoken==$(python3 scripts/pins.py get tiktoken)"
    while read -r pin flags; do
        # shellcheck disable=SC2086  # the flags are separate words
        "${pip[@]}" "$pin" $flags
    done < <(python3 scripts/pins.py bench)
    echo "$wanted" > "$bench_venv/.stamp"
fi
echo "$bench_venv"
