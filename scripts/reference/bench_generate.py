"""The PyTorch side of `make bench`'s generation benchmark (the Rust side is
llm_core/examples/bench_generate.rs): GPT-2 124M with seeded, untrained
weights generating 200 greedy tokens from "Hello, I am", single process, the
same threads as the Rust run.

- the book's own code (the `llms-from-scratch` package, pinned in
  environment.yml): `ch04.generate_text_simple` without a cache, and the
  package's `kv_cache` GPT-2 with its `generate_text_simple`;
- Hugging Face transformers' GPT2LMHeadModel.generate with use_cache off/on.

Prints `key value` lines; a variant that fails prints `key_error <message>`
instead of a number, so the table says why it is missing.

    $LLM_RS_CACHE/bench-venv/bin/python scripts/reference/bench_generate.py
"""
import os
import time

import torch

NEW_TOKENS = int(os.environ.get("LLM_BENCH_NEW_TOKENS", "200"))
DEVICE = torch.device("cuda" if os.environ.get("LLM_DEVICE", "cpu").startswith("cuda") else "cpu")
PROMPT = [15496, 11, 314, 716]  # "Hello, I am" in GPT-2's BPE
CFG = {
    "vocab_size": 50257,
    "context_length": 1024,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


def report(key, fn):
    try:
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        tok_s = NEW_TOKENS / (time.perf_counter() - t0)
        print(f"{key}_tok_s {tok_s:.2f}", flush=True)
        return out
    except Exception as e:  # the table prints why a variant is missing
        print(f"{key}_error {type(e).__name__}: {str(e).splitlines()[0][:160]}", flush=True)
        return None


def first_ids(out):
    return " ".join(str(int(t)) for t in out[0, : len(PROMPT) + 6])


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    idx = torch.tensor([PROMPT], device=DEVICE)
    print(f"torch_device {DEVICE}")

    from llms_from_scratch import ch04

    torch.manual_seed(123)
    book = ch04.GPTModel(CFG).eval().to(DEVICE)
    ch04.generate_text_simple(book, idx, 8, CFG["context_length"])  # warm-up
    out = report("torch_book_nocache",
                 lambda: ch04.generate_text_simple(book, idx, NEW_TOKENS, CFG["context_length"]))
    if out is not None:
        print(f"torch_book_first_ids {first_ids(out)}")

    from llms_from_scratch.kv_cache import generate as kv_generate
    from llms_from_scratch.kv_cache import gpt2 as kv_gpt2

    torch.manual_seed(123)
    book_kv = kv_gpt2.GPTModel(CFG).eval().to(DEVICE)
    book_kv.cfg = CFG  # the package's generate reads model.cfg
    report("torch_book_cached",
           lambda: kv_generate.generate_text_simple(book_kv, idx, NEW_TOKENS, use_cache=True))

    def drive_cached_model():
        # the package's cached model driven directly, in case only its
        # generate function is out of step with it
        cache = kv_gpt2.KVCache(n_layers=CFG["n_layers"])
        book_kv.current_pos = 0
        out = idx
        with torch.no_grad():
            logits = book_kv(idx, use_cache=True, cache=cache)
            for _ in range(NEW_TOKENS):
                nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
                out = torch.cat([out, nxt], dim=1)
                logits = book_kv(nxt, use_cache=True, cache=cache)
        return out
    report("torch_book_cached_model", drive_cached_model)

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(123)
    hf_cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    hf = GPT2LMHeadModel(hf_cfg).eval().to(DEVICE)
    for use_cache in (False, True):
        def run(n=NEW_TOKENS, use_cache=use_cache):
            with torch.no_grad():
                return hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False,
                                   max_new_tokens=n, min_new_tokens=n,
                                   use_cache=use_cache, pad_token_id=50256)
        run(8)  # warm-up
        report("hf_cached" if use_cache else "hf_nocache", run)
    print(f"torch_threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
