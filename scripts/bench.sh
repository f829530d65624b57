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
#   3. training: tokens/s of one epoch of notebook ch05's configuration (GPT-2
#      124M shape, context 256, batch 2, AdamW) in Rust and in the book's code
#      on PyTorch (scripts/reference/gpt_torch.py), same libtorch and threads,
#      with the matmul peak and the model FLOPs utilisation (6 N tokens/s).
#      The PyTorch side needs `import torch`, which the project venv cannot
#      do (it holds libtorch without torch's CUDA wheels), so the first run
#      makes a separate venv, $LLM_RS_CACHE/bench-venv, with the full torch
#      wheel (~3 GB download, once) and the `# bench:` pins of environment.yml
#      (scripts/bench_venv.sh).
#   4. generation: 200 greedy tokens from "Hello, I am" with GPT-2 124M
#      (seeded, untrained), without and with the KV cache, in Rust
#      (examples/bench_generate.rs), in the book's own code (the
#      llms-from-scratch package) and in Hugging Face transformers.
#   5. LoRA (appendix E): seconds per epoch, optimizer state and peak memory of
#      fine-tuning the 124M spam classifier with LoRA, with chapter 6's recipe
#      and in full, in Rust (examples/bench_lora.rs) and in the book's code.
#   6. Llama/Qwen: tokens/s of 150 greedy tokens through the KV cache with a
#      Qwen3-0.6B-shaped model (random weights, written once to
#      $LLM_RS_CACHE/bench/, 1.1 GB) in float32 and bfloat16, and the peak
#      memory of loading it, in Rust (examples/bench_open_model.rs), the
#      book's code and transformers (scripts/reference/bench_qwen3.py).
#   7. the speed ladder (issue 18, the book's ch05/10): tokens/s, loss after
#      SPEED_STEPS (default 50) steps and peak memory of each rung of
#      SpeedOptions::ladder() at notebook ch05's shape (124M, context 256,
#      batch 2), one process per rung (examples/bench_speed.rs), next to the
#      book's 00_orig.py and 01_opt_single_gpu.py models at the same shape
#      (scripts/reference/gpt_torch.py bench-speed). SECTIONS="7" runs only it.
#   8. data parallelism (issue 21): the same run on 1 process and on 2 ranks
#      (Gloo over 127.0.0.1, the same global batch), step time and gradient
#      all-reduce time per step (scripts/ddp_demo.sh, also `make ddp-demo`).
#      On 2 cores this is the overhead of data parallelism, not its scaling.
#   The CLI's tokenizer throughput on every core is in section 1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
out="target/bench"
mkdir -p "$out"
SECTIONS="${SECTIONS:-1 2 3 4 5 6 7 8}"
on() { [[ " $SECTIONS " == *" $1 "* ]]; }
echo "threads: libtorch uses ${OMP_NUM_THREADS:-all $(nproc)} core(s); machine: $(nproc) cores"

val() { awk -v k="$1" '$1 == k { print $2 }' "$out"/*.txt | tail -n1; }
num() { local v; v="$(val "$1")"; echo "${v:-nan}"; }
threads="${OMP_NUM_THREADS:-$(nproc)}"
if on 1; then
step "tokenizers (Rust, release build)"
cargo run --release --quiet -p llm_core --example bench_tokenizers | tee "$out/tokenizers.txt"
step_done
step "tiktoken (Python, single thread)"
RAYON_NUM_THREADS=1 "$LLM_RS_VENV/bin/python" scripts/bench_tiktoken.py | tee "$out/tiktoken.txt"
step_done

tik="$(val tiktoken_mb_s)"; g="$(val gpt2_tokenizer_mb_s)"; b="$(val bpe_tokenizer_mb_s)"
hfp="$(val hf_pipeline_mb_s)"; pc="$(val parallel_cores)"; pm="$(val parallel_mb_s)"
ours_train="$(val bpe_train_s)"; hf_train="$(val hf_bpe_train_s)"
echo
echo "| encode tinyshakespeare (GPT-2 BPE)      | MB/s | ratio to tiktoken |"
echo "|-----------------------------------------|-----:|------------------:|"
awk -v t="$tik" -v g="$g" -v b="$b" -v h="$hfp" -v c="$pc" -v p="$pm" 'BEGIN {
    printf "| tiktoken (Python, reference)            | %.2f | 1.00 |\n", t
    printf "| Gpt2Tokenizer                           | %.2f | %.2f |\n", g, g / t
    printf "| BpeTokenizer (from scratch, GPT-2 files)| %.2f | %.2f |\n", b, b / t
    printf "| tokenizers crate pipeline (tokenizer.json) | %.2f | %.2f |\n", h, h / t
    printf "| encode_parallel, %d threads (llm tokenize) | %.2f | %.2f (%.2f per thread) |\n", c, p, p / t, p / t / c }'
awk -v o="$ours_train" -v h="$hf_train" 'BEGIN {
    printf "\n| train BPE to 1000 tokens | seconds | ratio to tokenizers crate |\n|---|---:|---:|\n"
    printf "| tokenizers crate BpeTrainer | %.3f | 1.00 |\n| BpeTokenizer::train | %.3f | %.2f |\n", h, o, o / h }'

fi
if on 2; then
step "attention forward+backward (release build)"
cargo run --release --quiet -p llm_core --example bench_attention | tee "$out/attention.txt"
step_done

fi
step "benchmark venv with full torch and the reference code (first time only)"
bench_venv="$(bash scripts/bench_venv.sh | tail -n1)"
step_done
if on 3; then
step "training throughput: Rust then PyTorch, $threads threads each"
OMP_NUM_THREADS="$threads" cargo run --release --quiet -p llm_core --example bench_train | tee "$out/train_rust.txt"
OMP_NUM_THREADS="$threads" "$bench_venv/bin/python" scripts/reference/gpt_torch.py bench | tee "$out/train_torch.txt"
step_done
r="$(val rust_train_tokens_per_s)"; p="$(val torch_train_tokens_per_s)"; peak="$(val matmul_gflops)"
n="$(val rust_params)"
awk -v r="$r" -v p="$p" -v peak="$peak" -v n="$n" 'BEGIN {
    printf "\n| train one epoch of notebook ch05 (124M, ctx 256, batch 2) | tokens/s | ratio to PyTorch | MFU |\n|---|---:|---:|---:|\n"
    printf "| PyTorch 2.13 (book code, reference) | %.1f | 1.00 | %.2f |\n", p, 6 * n * p / (peak * 1e9)
    printf "| llm_core (Rust) | %.1f | %.2f | %.2f |\n", r, r / p, 6 * n * r / (peak * 1e9)
    printf "matmul peak (2048^3 float32): %.1f GFLOP/s\n", peak }'

fi
if on 4; then
step "generation with and without the KV cache: Rust then PyTorch, $threads threads each"
OMP_NUM_THREADS="$threads" cargo run --release --quiet -p llm_core --example bench_generate | tee "$out/generate_rust.txt"
OMP_NUM_THREADS="$threads" "$bench_venv/bin/python" scripts/reference/bench_generate.py | tee "$out/generate_torch.txt"
step_done
why() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$out"/generate_*.txt | tail -n1; }
book_cached="$(num torch_book_cached_tok_s)"
[ "$book_cached" != nan ] || book_cached="$(num torch_book_cached_model_tok_s)"
awk -v rn="$(num rust_gen_nocache_tok_s)" -v rs="$(num rust_gen_simple_tok_s)" -v rp="$(num rust_gen_prealloc_tok_s)" \
    -v bn="$(num torch_book_nocache_tok_s)" -v bc="$book_cached" \
    -v hn="$(num hf_nocache_tok_s)" -v hc="$(num hf_cached_tok_s)" \
    -v bce="$(why torch_book_cached_error)" -v bme="$(why torch_book_cached_model_error)" 'function r(a, b) { return (a == "nan" || b == "nan" || b == 0) ? "-" : sprintf("%.2f", a / b) }
    function t(a) { return a == "nan" ? "-" : sprintf("%.1f", a) }
    BEGIN {
    best_ours = (rp > rs) ? rp : rs
    printf "\n| generate 200 tokens, GPT-2 124M, \"Hello, I am\" | tokens/s | vs own no-cache | ours cached vs it |\n|---|---:|---:|---:|\n"
    printf "| book code (llms-from-scratch), no cache | %s | 1.00 | %s |\n", t(bn), r(best_ours, bn)
    printf "| book code, KV cache | %s | %s | %s |\n", t(bc), r(bc, bn), r(best_ours, bc)
    printf "| transformers GPT2LMHeadModel, use_cache=False | %s | 1.00 | %s |\n", t(hn), r(best_ours, hn)
    printf "| transformers GPT2LMHeadModel, use_cache=True | %s | %s | %s |\n", t(hc), r(hc, hn), r(best_ours, hc)
    printf "| llm_core, no cache | %s | 1.00 | |\n", t(rn)
    printf "| llm_core, simple cache | %s | %s | |\n", t(rs), r(rs, rn)
    printf "| llm_core, preallocated cache | %s | %s | |\n", t(rp), r(rp, rn)
    if (bce != "") printf "the book package'"'"'s kv_cache generate_text_simple failed: %s\n", bce
    if (bme != "") printf "the book package'"'"'s kv_cache GPTModel driven directly failed: %s\n", bme }'

fi
if on 5; then
step "LoRA against chapter 6's recipe and full fine-tuning (124M classifier, batch 8 x 120): Rust then PyTorch, one process per mode"
cargo build --release --quiet -p llm_core --example bench_lora
for mode in full last_block lora; do
    OMP_NUM_THREADS="$threads" target/release/examples/bench_lora "$mode" | tee "$out/lora_rust_$mode.txt"
    OMP_NUM_THREADS="$threads" "$bench_venv/bin/python" scripts/reference/gpt_torch.py bench-lora --mode "$mode" | tee "$out/lora_torch_$mode.txt"
done
step_done
{
    printf "\n| fine-tune the 124M classifier | trainable | s/epoch (130 batches) | optimizer state MB | peak RSS MB | s/epoch vs full | s/epoch vs PyTorch | peak RSS vs PyTorch |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    for pre in torch_lora lora; do
        for mode in full last_block lora; do
            awk -v who="$pre" -v mode="$mode" -v tr="$(num ${pre}_${mode}_trainable)" \
                -v e="$(num ${pre}_${mode}_epoch_s)" -v ef="$(num ${pre}_full_epoch_s)" \
                -v et="$(num torch_lora_${mode}_epoch_s)" -v st="$(num ${pre}_${mode}_optimizer_state_mb)" \
                -v m="$(num ${pre}_${mode}_peak_rss_mb)" -v mt="$(num torch_lora_${mode}_peak_rss_mb)" \
                'function r(a, b) { return (a == "nan" || b == "nan" || b == 0) ? "-" : sprintf("%.2f", a / b) }
                 BEGIN { printf "| %s, %s | %s | %s | %s | %s | %s | %s | %s |\n", (who == "torch_lora" ? "book code (PyTorch)" : "llm_core"), mode, tr, e, st, m, r(e, ef), r(e, et), r(m, mt) }'
        done
    done
} | tee "$out/lora_table.md"


fi
if on 6; then
bench_venv="$bench_venv" threads="$threads" bash scripts/bench_qwen3.sh
fi

if on 7; then
steps="${SPEED_STEPS:-50}"
step "the speed ladder: $steps steps per rung, one process each, $threads threads; then the book's models"
cargo build --release --quiet -p llm_core --example bench_speed
rungs="$(target/release/examples/bench_speed --list | awk '{ print $1 }')"
rm -f "$out"/speed_*.txt
for i in $rungs; do
    OMP_NUM_THREADS="$threads" target/release/examples/bench_speed "$i" --steps "$steps" | tee "$out/speed_rust_$i.txt"
done
for mode in orig opt-nocompile opt; do
    OMP_NUM_THREADS="$threads" "$bench_venv/bin/python" scripts/reference/gpt_torch.py bench-speed --mode "$mode" --steps "$steps" 2>"$out/speed_torch_$mode.err" | tee "$out/speed_torch_$mode.txt" \
        || echo "the book's $mode run failed: $(tail -n1 "$out/speed_torch_$mode.err")"
done
step_done
{
    printf "\n| speed ladder, 124M, ctx 256, batch 2, %s steps, %s threads | tok/s | vs book 00_orig | vs book 01_opt | loss after | loss vs fp32 | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|\n" "$steps" "$threads"
    orig="$(num torch_speed_orig_tok_s)"; opt="$(num torch_speed_opt_tok_s)"; base_loss="$(num speed_0_loss)"
    row() { awk -v n="$1" -v t="$2" -v o="$orig" -v p="$opt" -v l="$3" -v b="$base_loss" -v m="$4" \
        'function r(a, b) { return (a == "nan" || b == "nan" || b == 0) ? "-" : sprintf("%.2f", a / b) }
         BEGIN { printf "| %s | %s | %s | %s | %s | %s | %s |\n", n, t, r(t, o), r(t, p), l, (l == "nan" || b == "nan") ? "-" : sprintf("%+.2f %%", 100 * (l - b) / b), m }'; }
    row "book 00_orig.py model (PyTorch, fp32)" "$orig" "$(num torch_speed_orig_loss)" "$(num torch_speed_orig_peak_rss_mb)"
    row "book 01_opt model, no torch.compile" "$(num torch_speed_opt_nocompile_tok_s)" "$(num torch_speed_opt_nocompile_loss)" "$(num torch_speed_opt_nocompile_peak_rss_mb)"
    row "book 01_opt model with torch.compile" "$opt" "$(num torch_speed_opt_loss)" "$(num torch_speed_opt_peak_rss_mb)"
    for i in $rungs; do
        name="$(awk -v k="speed_${i}_name" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$out"/speed_rust_"$i".txt)"
        if [ -z "$name" ]; then continue; fi
        row "llm_core $i: $name" "$(num "speed_${i}_tok_s")" "$(num "speed_${i}_loss")" "$(num "speed_${i}_peak_rss_mb")"
    done
} | tee "$out/speed_table.md"
fi
if on 8; then
step "data parallelism: 1 process vs 2 ranks over Gloo (scripts/ddp_demo.sh)"
bash scripts/ddp_demo.sh | tee "$out/ddp.txt"
step_done
fi
