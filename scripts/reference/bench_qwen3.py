"""The PyTorch side of the Qwen3-0.6B benchmark: a Qwen3-0.6B-shaped model with
seeded random weights, greedy generation through the KV cache, and the peak memory
of loading its safetensors file. One (impl, dtype) per process, since the peak RSS
after loading in a fresh process is what is measured; threads follow
OMP_NUM_THREADS when it is set.

- book: the book's package (`llms-from-scratch`): kv_cache.qwen3.Qwen3Model with
  QWEN_CONFIG_06_B, load_weights_into_qwen, kv_cache.generate.generate_text_simple;
- transformers: Qwen3ForCausalLM.from_pretrained and generate(use_cache=True).

Prints `key value` lines. Write the weights once (~1.2 GB, bfloat16), then run:

    $LLM_RS_CACHE/bench-venv/bin/python scripts/reference/bench_qwen3.py --make-weights /tmp/qwen3-06b-random
    OMP_NUM_THREADS=2 $LLM_RS_CACHE/bench-venv/bin/python scripts/reference/bench_qwen3.py \
        --weights /tmp/qwen3-06b-random --impl book --dtype bfloat16 --new-tokens 150
"""
import argparse
import contextlib
import gc
import json
import os
import resource
import sys
import time

import torch

VOCAB = 151936
# config.json in the layout of Qwen/Qwen3-0.6B on the hub (transformers 4.51)
HUB_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": VOCAB,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_weights(out_dir, seed=123):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    keys = ("attention_bias", "bos_token_id", "eos_token_id", "head_dim", "hidden_size",
            "intermediate_size", "max_position_embeddings", "max_window_layers",
            "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps",
            "rope_theta", "tie_word_embeddings", "use_sliding_window", "vocab_size")
    cfg = Qwen3Config(**{k: HUB_CONFIG[k] for k in keys})
    torch.set_default_dtype(torch.bfloat16)  # build in bfloat16 (~1.2 GB), not float32
    model = Qwen3ForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied lm_head is listed once
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="100GB")
    os.replace(os.path.join(out_dir, "config.json"), os.path.join(out_dir, "config.v5.json"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(HUB_CONFIG, f, indent=2)
        f.write("\n")
    path = os.path.join(out_dir, "model.safetensors")
    print(f"weights {path}")
    print(f"weights_mb {os.path.getsize(path) / 2**20:.1f}")


def load_book(weights_dir, dtype):
    from safetensors.torch import load_file
    from llms_from_scratch.kv_cache.qwen3 import QWEN_CONFIG_06_B, Qwen3Model, load_weights_into_qwen

    cfg = dict(QWEN_CONFIG_06_B, dtype=dtype)
    model = Qwen3Model(cfg)
    params = load_file(os.path.join(weights_dir, "model.safetensors"))
    if any(v.dtype != dtype for v in params.values()):
        params = {k: v.to(dtype) for k, v in params.items()}
    with contextlib.redirect_stdout(sys.stderr):  # it prints "Model uses weight tying."
        load_weights_into_qwen(model, cfg, params)
    del params
    gc.collect()
    return model.eval()


def load_transformers(weights_dir, dtype):
    from transformers import Qwen3ForCausalLM

    return Qwen3ForCausalLM.from_pretrained(weights_dir, dtype=dtype).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-weights", metavar="DIR",
                    help="write a Qwen3-0.6B-shaped random model (bfloat16) to DIR and exit")
    ap.add_argument("--weights", metavar="DIR", help="config.json + model.safetensors")
    ap.add_argument("--impl", choices=["book", "transformers"], default="book")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bfloat16")
    ap.add_argument("--new-tokens", type=int, default=150)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed generations; the fastest is reported")
    args = ap.parse_args()

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.make_weights:
        make_weights(args.make_weights)
        return
    if not args.weights:
        ap.error("--weights DIR (or --make-weights DIR) is required")
    dtype = DTYPES[args.dtype]

    if args.impl == "book":
        from llms_from_scratch.kv_cache.generate import generate_text_simple
        import llms_from_scratch.kv_cache.qwen3  # noqa: F401  (counted in the baseline)

        load = load_book

        def generate(model, idx, n):
            return generate_text_simple(model, idx, n, use_cache=True)
    else:
        import transformers  # noqa: F401  (counted in the baseline)
        from transformers import Qwen3ForCausalLM  # noqa: F401

        load = load_transformers

        def generate(model, idx, n):
            with torch.no_grad():
                return model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n,
                                      min_new_tokens=n, do_sample=False, use_cache=True,
                                      pad_token_id=HUB_CONFIG["bos_token_id"])

    print(f"impl {args.impl}")
    print(f"dtype {args.dtype}")
    print(f"threads {torch.get_num_threads()}")
    print(f"baseline_rss_mb {peak_rss_mb():.1f}", flush=True)

    t0 = time.perf_counter()
    model = load(args.weights, dtype)
    load_s = time.perf_counter() - t0
    print(f"load_s {load_s:.3f}")
    print(f"load_peak_rss_mb {peak_rss_mb():.1f}")
    print(f"load_rss_mb {current_rss_mb():.1f}", flush=True)

    g = torch.Generator().manual_seed(123)
    idx = torch.randint(0, VOCAB, (1, args.prompt_tokens), generator=g)
    generate(model, idx, 5)  # warm-up
    runs = []
    for _ in range(args.repeats):  # the best of a few: memory-bound timings are noisy on a shared machine
        t0 = time.perf_counter()
        out = generate(model, idx, args.new_tokens)
        runs.append(time.perf_counter() - t0)
    gen_s = min(runs)
    assert out.shape[1] == args.prompt_tokens + args.new_tokens, out.shape
    print(f"prompt_tokens {args.prompt_tokens}")
    print(f"new_tokens {args.new_tokens}")
    print(f"gen_s {gen_s:.3f}")
    print(f"tokens_per_s {args.new_tokens / gen_s:.3f}")
    print(f"tokens_per_s_runs {' '.join(f'{args.new_tokens / t:.3f}' for t in runs)}")
    first = out[0, args.prompt_tokens:args.prompt_tokens + 8]
    print(f"first_ids {' '.join(str(int(t)) for t in first)}")
    print(f"peak_rss_mb {peak_rss_mb():.1f}")
    weights = os.path.join(args.weights, "model.safetensors")
    print(f"weights_mb {os.path.getsize(weights) / 2**20:.1f}")


if __name__ == "__main__":
    main()
