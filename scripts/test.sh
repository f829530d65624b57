#!/usr/bin/env bash
# The test command (`make test`, and CI's .ci/run): static checks, unit and
# integration tests, the pin check, then every notebook in smoke settings.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
t0=$(date +%s)
[ -n "${LIBTORCH:-}" ] || { echo "test: libtorch not found; run scripts/setup.sh first" >&2; exit 1; }
# No network at test time: a file missing from LLM_DATA_DIR is an error, never a download.
export LLM_OFFLINE=1
echo "LLM_DATA_DIR=${LLM_DATA_DIR:-<unset: files are downloaded into $LLM_RS_CACHE/data>}"

step "cargo fmt --check";  cargo fmt --all -- --check;                     step_done
step "cargo clippy";       cargo clippy --all-targets --quiet -- -D warnings; step_done
step "cargo test";         cargo test --quiet;                               step_done
step "environment pins";   "$LLM_RS_VENV/bin/python" -m unittest discover -s tests -p 'test_*.py'; step_done
step "notebooks (smoke)";  "$LLM_RS_VENV/bin/python" scripts/run_notebooks.py --smoke; step_done

echo "test: all passed in $(( $(date +%s) - t0 ))s"
