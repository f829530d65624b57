#!/usr/bin/env bash
# make ddp-demo: data-parallel training on this machine, 1 process vs 2
# (Gloo over 127.0.0.1), the same model, data and global batch: their losses
# per step side by side, and the step and all-reduce times.
#
# On a 2-core machine this measures the overhead of data parallelism, not
# its scaling: two ranks share the cores one process had.
#
#   LLM_BIN=target/debug/llm DEMO_KB=40 bash scripts/ddp_demo.sh   # smaller and quicker
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$LLM_RS_ROOT"
if [ -z "${LLM_BIN:-}" ]; then
    cargo build --release --quiet -p llm_cli
    LLM_BIN="$LLM_RS_ROOT/target/release/llm"
fi
LLM_BIN="$(realpath "$LLM_BIN")"
out="${DEMO_DIR:-$LLM_RS_ROOT/target/ddp-demo}"
rm -rf "$out" && mkdir -p "$out" && cd "$out"
text="$("$LLM_BIN" download tinyshakespeare.txt | sed 's/^tinyshakespeare.txt: //')"
head -c "$(( ${DEMO_KB:-120} * 1000 ))" "$text" > shakespeare.txt
cat > demo.toml <<TOML
# a small GPT, without dropout (each rank would draw its own masks)
context_length = 128
emb_dim = ${DEMO_EMB:-192}
n_heads = 6
n_layers = ${DEMO_LAYERS:-4}
drop_rate = 0.0
num_epochs = 1
learning_rate = 1e-3
eval_freq = ${DEMO_EVAL_FREQ:-10}
eval_iter = 1
sample_tokens = 0
TOML
port=$(( 29500 + RANDOM % 1000 ))
echo "== 1 process, batch 8"
echo "\$ llm launch --nproc-per-node 1 -- pretrain shakespeare.txt --config demo.toml --batch-size 8 --out one"
"$LLM_BIN" launch --nproc-per-node 1 --master-port "$port" -- pretrain shakespeare.txt --config demo.toml --batch-size 8 --out one > one.log
grep -E "^data|tokens/s" one.log
echo "== 2 processes (ranks), batch 4 each: the same global batch of 8"
echo "\$ llm launch --nproc-per-node 2 -- pretrain shakespeare.txt --config demo.toml --batch-size 4 --out two"
"$LLM_BIN" launch --nproc-per-node 2 --master-port "$((port + 1))" -- pretrain shakespeare.txt --config demo.toml --batch-size 4 --out two > two.log
grep -E "^data|tokens/s" two.log
echo
python3 - <<'PY'
import json
one = [json.loads(l) for l in open("one/metrics.jsonl")]
two = [json.loads(l) for l in open("two/metrics.jsonl")]
print("| step | loss, 1 process | loss, 2 ranks | difference |")
print("|---:|---:|---:|---:|")
worst = 0.0
for a, b in zip(one, two):
    d = abs(a["loss"] - b["loss"])
    worst = max(worst, d / abs(a["loss"]))
    print(f"| {a['global_step'] + 1} | {a['loss']:.6f} | {b['loss']:.6f} | {d:.1e} |")
print(f"\nlargest relative difference: {worst:.1e} (float32 sums in another order)")
PY
