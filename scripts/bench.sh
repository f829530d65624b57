#!/usr/bin/env bash
# `make bench`: benchmarks side by side with their reference, reported as ratios.
# Not part of the tests (tests never assert timings). Release builds: the first
# run compiles the dependencies in release mode (~15 min on 2 cores).
#
#   1. tokenizers on tinyshakespeare: our GPT-2 BPE (tokenizers crate), our BPE
#      from scratch loaded with GPT-2's merges, and tiktoken (Python, 1 thread);
#      training time of our BPE trainer vs the tokenizers crate's trainer.
#   2. attention: one forward+backward of MultiHeadAttention vs the fused
#      scaled_dot_product_attention variant at 8 x 1024 x 768.
#   3. training: tokens/s of one epoch of notebook 04's configuration (GPT-2
#      124M shape, context 256, batch 2, AdamW) in Rust and in the book's code
#      on PyTorch (scripts/reference/gpt_torch.py), same libtorch and threads,
#      with the matmul peak and the model FLOPs utilisation (6 N tokens/s).
#      The PyTorch side needs `import torch`, which the project venv cannot
#      do (it holds libtorch without torch's CUDA wheels), so the first run
#      makes a separate venv, $LLM_RS_CACHE/bench-venv, with the full torch
#      wheel (~3 GB download, once).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
out="target/bench"
mkdir -p "$out"
echo "threads: libtorch uses ${OMP_NUM_THREADS:-all $(nproc)} core(s); machine: $(nproc) cores"

step "tokenizers (Rust, release build)"
cargo run --release --quiet -p llm_core --example bench_tokenizers | tee "$out/tokenizers.txt"
step_done
step "tiktoken (Python, single thread)"
RAYON_NUM_THREADS=1 "$LLM_RS_VENV/bin/python" scripts/bench_tiktoken.py | tee "$out/tiktoken.txt"
step_done

val() { awk -v k="$1" '$1 == k { print $2 }' "$out"/*.txt | tail -n1; }
tik="$(val tiktoken_mb_s)"; g="$(val gpt2_tokenizer_mb_s)"; b="$(val bpe_tokenizer_mb_s)"
ours_train="$(val bpe_train_s)"; hf_train="$(val hf_bpe_train_s)"
echo
echo "| encode tinyshakespeare (GPT-2 BPE)      | MB/s | ratio to tiktoken |"
echo "|-----------------------------------------|-----:|------------------:|"
awk -v t="$tik" -v g="$g" -v b="$b" 'BEGIN {
    printf "| tiktoken (Python, reference)            | %.2f | 1.00 |\n", t
    printf "| Gpt2Tokenizer (tokenizers crate)        | %.2f | %.2f |\n", g, g / t
    printf "| BpeTokenizer (from scratch, GPT-2 files)| %.2f | %.2f |\n", b, b / t }'
awk -v o="$ours_train" -v h="$hf_train" 'BEGIN {
    printf "\n| train BPE to 1000 tokens | seconds | ratio to tokenizers crate |\n|---|---:|---:|\n"
    printf "| tokenizers crate BpeTrainer | %.3f | 1.00 |\n| BpeTokenizer::train | %.3f | %.2f |\n", h, o, o / h }'

step "attention forward+backward (release build)"
cargo run --release --quiet -p llm_core --example bench_attention | tee "$out/attention.txt"
step_done

step "benchmark venv with full torch (first time only)"
bench_venv="$LLM_RS_CACHE/bench-venv"
torch_version="$(python3 scripts/pins.py get torch)"
tiktoken_version="$(python3 scripts/pins.py get tiktoken)"
if [ "$(cat "$bench_venv/.stamp" 2>/dev/null)" != "$torch_version $tiktoken_version" ]; then
    python3 -m venv "$bench_venv"
    "$bench_venv/bin/python" -m pip install --disable-pip-version-check -q \
        "torch==$torch_version" "tiktoken==$tiktoken_version"
    echo "$torch_version $tiktoken_version" > "$bench_venv/.stamp"
fi
step_done
threads="${OMP_NUM_THREADS:-$(nproc)}"
step "training throughput: Rust then PyTorch, $threads threads each"
OMP_NUM_THREADS="$threads" cargo run --release --quiet -p llm_core --example bench_train | tee "$out/train_rust.txt"
OMP_NUM_THREADS="$threads" "$bench_venv/bin/python" scripts/reference/gpt_torch.py bench | tee "$out/train_torch.txt"
step_done
r="$(val rust_train_tokens_per_s)"; p="$(val torch_train_tokens_per_s)"; peak="$(val matmul_gflops)"
n="$(val rust_params)"
awk -v r="$r" -v p="$p" -v peak="$peak" -v n="$n" 'BEGIN {
    printf "\n| train one epoch of notebook 04 (124M, ctx 256, batch 2) | tokens/s | ratio to PyTorch | MFU |\n|---|---:|---:|---:|\n"
    printf "| PyTorch 2.13 (book code, reference) | %.1f | 1.00 | %.2f |\n", p, 6 * n * p / (peak * 1e9)
    printf "| llm_core (Rust) | %.1f | %.2f | %.2f |\n", r, r / p, 6 * n * r / (peak * 1e9)
    printf "matmul peak (2048^3 float32): %.1f GFLOP/s\n", peak }'
