#!/usr/bin/env bash
# Section 6 of `make bench` (also runnable alone): a Qwen3-0.6B-shaped model
# with random weights (written once to $LLM_RS_CACHE/bench/, 1.1 GB),
# 150 greedy tokens through the KV cache in float32 and bfloat16, and the peak
# memory of loading it: llm_core (examples/bench_open_model.rs), the book's
# code and transformers (scripts/reference/bench_qwen3.py), one process each,
# same threads. LLM_BENCH_NEW_TOKENS changes the 150.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
out="target/bench"
mkdir -p "$out"
bench_venv="${bench_venv:-$(bash scripts/bench_venv.sh | tail -n1)}"
threads="${threads:-${OMP_NUM_THREADS:-$(nproc)}}"
step "Qwen3 0.6B shape (random weights): generation through the KV cache and loading memory, one process per implementation and dtype"
qwen_dir="$LLM_RS_CACHE/bench/qwen3-0.6b-random"
[ -f "$qwen_dir/model.safetensors" ] || "$bench_venv/bin/python" scripts/reference/bench_qwen3.py --make-weights "$qwen_dir"
cargo build --release --quiet -p llm_core --example bench_open_model
qwen_new="${LLM_BENCH_NEW_TOKENS:-150}"
for dtype in float32 bfloat16; do
    OMP_NUM_THREADS="$threads" target/release/examples/bench_open_model "$qwen_dir" "$dtype" "$qwen_new" | tee "$out/qwen3_rust_$dtype.txt"
    for impl in book transformers; do
        OMP_NUM_THREADS="$threads" "$bench_venv/bin/python" scripts/reference/bench_qwen3.py --weights "$qwen_dir" \
            --impl "$impl" --dtype "$dtype" --new-tokens "$qwen_new" | tee "$out/qwen3_${impl}_$dtype.txt"
    done
done
step_done
kv() { local v; v="$(awk -v k="$2" '$1 == k { print $2 }' "$out/$1.txt" 2>/dev/null | tail -n1)"; echo "${v:-nan}"; }
{
    printf "\n| Qwen3-0.6B shape, %s new tokens, %s threads | tokens/s | vs book code | vs transformers | load peak RSS MB | peak RSS MB | peak RSS vs book | first ids |\n|---|---:|---:|---:|---:|---:|---:|---|\n" "$qwen_new" "$threads"
    for dtype in float32 bfloat16; do
        for who in book transformers rust; do
            f="qwen3_${who}_$dtype"
            awk -v who="$who" -v dtype="$dtype" -v t="$(kv "$f" tokens_per_s)" -v tb="$(kv "qwen3_book_$dtype" tokens_per_s)" \
                -v th="$(kv "qwen3_transformers_$dtype" tokens_per_s)" -v l="$(kv "$f" load_peak_rss_mb)" \
                -v m="$(kv "$f" peak_rss_mb)" -v mb="$(kv "qwen3_book_$dtype" peak_rss_mb)" \
                -v ids="$(awk '$1 == "first_ids" { $1 = ""; print }' "$out/$f.txt" 2>/dev/null)" \
                'function r(a, b) { return (a == "nan" || b == "nan" || b == 0) ? "-" : sprintf("%.2f", a / b) }
                 BEGIN { name = (who == "rust") ? "llm_core" : (who == "book") ? "book code (llms-from-scratch)" : "transformers Qwen3ForCausalLM"
                         printf "| %s, %s | %s | %s | %s | %s | %s | %s |%s |\n", name, dtype, t, r(t, tb), r(t, th), l, m, r(m, mb), ids }'
        done
    done
    printf "(weights file: %s MB of bfloat16; transformers memory-maps it, so its load peak understates what it holds once generating)\n" "$(kv qwen3_rust_bfloat16 weights_mb)"
} | tee "$out/qwen3_table.md"
