//! Generation throughput with and without the KV cache (the book's bonus
//! `ch04/03_kv-cache` measurement): GPT-2 124M with seeded, untrained weights
//! generating 200 greedy tokens from "Hello, I am", with no cache, the
//! simple cache and the preallocated one. Prints tokens per second for each
//! and checks that all three produce the same tokens. The PyTorch side (the
//! book's code and Hugging Face transformers) is
//! `scripts/reference/bench_generate.py`; `make bench` runs both and prints
//! the ratios.
//!
//! `LLM_DEVICE=cuda` (or `cuda:N`, `auto`) runs it on a GPU.
//!
//! ```text
//! source scripts/env.sh && cargo run --release -p llm_core --example bench_generate
//! ```
use std::time::Instant;

use llm_core::model::generate::generate_text_simple_cached;
use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
use llm_core::model::kv_cache::KvCache;
use llm_core::tch::{self, nn, Device, Tensor};

fn main() -> anyhow::Result<()> {
    let new_tokens: i64 = std::env::var("LLM_BENCH_NEW_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let device = llm_core::settings::parse_device(
        &std::env::var("LLM_DEVICE").unwrap_or_else(|_| "cpu".to_string()),
    )
    .map_err(anyhow::Error::msg)?;
    println!("rust_gen_device {device:?}");
    let cfg = GptConfig::gpt2_small();
    tch::manual_seed(123);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg)?;
    vs.set_device(device);
    // "Hello, I am"
    let prompt = Tensor::from_slice(&[15496i64, 11, 314, 716])
        .unsqueeze(0)
        .to_device(device);
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let layers = cfg.n_layers as usize;
    // warm-up: allocator and thread pool
    let _ = generate_text_simple_cached(&model, &prompt, 8, &mut KvCache::simple(layers));

    sync();
    let t0 = Instant::now();
    let oracle = generate_text_simple(&model, &prompt, new_tokens, cfg.context_length);
    sync();
    let uncached = new_tokens as f64 / t0.elapsed().as_secs_f64();
    println!("rust_gen_nocache_tok_s {uncached:.2}");

    for (key, mut cache) in [
        ("rust_gen_simple_tok_s", KvCache::simple(layers)),
        (
            "rust_gen_prealloc_tok_s",
            KvCache::preallocated(layers, cfg.context_length)?,
        ),
    ] {
        sync();
        let t0 = Instant::now();
        let out = generate_text_simple_cached(&model, &prompt, new_tokens, &mut cache);
        sync();
        let tok_s = new_tokens as f64 / t0.elapsed().as_secs_f64();
        anyhow::ensure!(out.equal(&oracle), "{key}: not the uncached tokens");
        println!("{key} {tok_s:.2}");
    }
    println!("rust_gen_identical true");
    Ok(())
}
