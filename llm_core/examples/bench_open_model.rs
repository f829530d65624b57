//! Generation speed and loading memory of a Qwen3-0.6B-shaped model (the
//! Llama/Qwen bonus): load a Hugging Face directory (`config.json` +
//! `model.safetensors`, random weights are fine: speed does not depend on
//! the values) in float32 or bfloat16, then generate greedily through the
//! KV cache (three timed runs, the fastest reported). Prints `key value` lines with the keys of
//! `scripts/reference/bench_qwen3.py` (the book's code and transformers);
//! `make bench` runs both sides and prints the ratios. One dtype per
//! process, so the peak memory after loading is this load's.
//!
//! ```text
//! source scripts/env.sh && cargo run --release -p llm_core --example bench_open_model -- \
//!     DIR [float32|bfloat16] [new_tokens] [prompt_tokens]
//! ```
use std::time::Instant;

use llm_core::model::generate::generate_text_simple_cached;
use llm_core::model::hf_weights::load_open_model;
use llm_core::model::kv_cache::KvCache;
use llm_core::tch::{self, Device, Kind, Tensor};

/// A line of /proc/self/status in MiB (`VmHWM`: peak, `VmRSS`: now).
fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or_else(|| {
        anyhow::anyhow!(
            "usage: bench_open_model DIR [float32|bfloat16] [new_tokens] [prompt_tokens]"
        )
    })?;
    let dtype = args.get(1).map_or("bfloat16", String::as_str);
    let kind = match dtype {
        "float32" => Kind::Float,
        "bfloat16" => Kind::BFloat16,
        other => anyhow::bail!("dtype {other:?}: accepted float32 or bfloat16"),
    };
    let new_tokens: i64 = args.get(2).map_or(Ok(150), |s| s.parse())?;
    let prompt_tokens: i64 = args.get(3).map_or(Ok(16), |s| s.parse())?;

    let _ = Tensor::zeros([1], (Kind::Float, Device::Cpu)); // libtorch loaded
    println!("impl llm_core");
    println!("dtype {dtype}");
    println!("threads {}", tch::get_num_threads());
    println!("baseline_rss_mb {:.1}", status_mb("VmHWM:"));

    let t0 = Instant::now();
    let (_vs, model) = load_open_model(dir, Device::Cpu, kind)?;
    println!("load_s {:.3}", t0.elapsed().as_secs_f64());
    println!("load_peak_rss_mb {:.1}", status_mb("VmHWM:"));
    println!("load_rss_mb {:.1}", status_mb("VmRSS:"));

    // the prompt the Python side draws: torch.Generator().manual_seed(123), randint
    tch::manual_seed(123);
    let idx = Tensor::randint(
        model.cfg.vocab_size,
        [1, prompt_tokens],
        (Kind::Int64, Device::Cpu),
    );
    let capacity = prompt_tokens + new_tokens;
    let mut cache = KvCache::preallocated(model.trf_blocks.len(), capacity)?;
    let _ = generate_text_simple_cached(&model, &idx, 5, &mut cache); // warm-up
                                                                      // the best of three: memory-bound timings are noisy on a shared machine
    let mut runs = Vec::new();
    let mut out = idx.shallow_clone();
    for _ in 0..3 {
        let t0 = Instant::now();
        out = generate_text_simple_cached(&model, &idx, new_tokens, &mut cache);
        runs.push(t0.elapsed().as_secs_f64());
    }
    let gen_s = runs.iter().copied().fold(f64::INFINITY, f64::min);
    println!("prompt_tokens {prompt_tokens}");
    println!("new_tokens {new_tokens}");
    println!("gen_s {gen_s:.3}");
    println!("tokens_per_s {:.3}", new_tokens as f64 / gen_s);
    let per_run: Vec<String> = runs
        .iter()
        .map(|t| format!("{:.3}", new_tokens as f64 / t))
        .collect();
    println!("tokens_per_s_runs {}", per_run.join(" "));
    let first = Vec::<i64>::try_from(out.get(0).narrow(0, prompt_tokens, 8.min(new_tokens)))?;
    let first: Vec<String> = first.iter().map(|i| i.to_string()).collect();
    println!("first_ids {}", first.join(" "));
    println!("peak_rss_mb {:.1}", status_mb("VmHWM:"));
    let weights = std::path::Path::new(dir).join("model.safetensors");
    let mb = std::fs::metadata(&weights).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    println!("weights_mb {mb:.1}");
    Ok(())
}
