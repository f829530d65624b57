//! `make gpu-check`: what libtorch sees, then a few training steps and a
//! generation on the chosen device with their tokens per second, like the
//! book's environment check. Needs no data files (random token ids).
//!
//! The device is `LLM_DEVICE` (default `auto`: the first CUDA GPU, else the
//! CPU). On CUDA it trains GPT-2 124M at context 1024, batch 8, with
//! [`SpeedOptions::fastest`] next to the book's float32 path; on a CPU at
//! context 256, batch 2, with [`SpeedOptions::fastest_cpu`].
//!
//! ```text
//! make gpu-check                    # or:
//! LLM_DEVICE=cuda cargo run --release -p llm_core --example gpu_check
//! ```
use std::time::Instant;

use llm_core::model::generate::generate_text_simple_cached;
use llm_core::model::gpt::GptConfig;
use llm_core::model::kv_cache::KvCache;
use llm_core::settings::{init_cuda, Settings};
use llm_core::tch::{self, nn, Cuda, Device, Kind, Tensor};
use llm_core::train::pretrain::train_step;
use llm_core::train::speed::SpeedOptions;

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        Cuda::synchronize(i as i64);
    }
}

/// Tokens per second of `steps` training steps (after one warm-up step).
fn train_tok_s(
    cfg: &GptConfig,
    speed: &SpeedOptions,
    batch: i64,
    steps: usize,
    device: Device,
) -> anyhow::Result<(f64, f64)> {
    tch::manual_seed(123);
    let mut vs = nn::VarStore::new(device);
    let model = speed.build_model(&mut vs, cfg)?;
    let mut optimizer = speed.optimizer(&vs, &model, 4e-4, 0.1);
    let ids = Tensor::randint(
        cfg.vocab_size,
        [batch, cfg.context_length + 1],
        (Kind::Int64, device),
    );
    let (x, y) = (
        ids.narrow(1, 0, cfg.context_length),
        ids.narrow(1, 1, cfg.context_length),
    );
    let mut t0 = Instant::now();
    let mut loss = f64::NAN;
    for step in 0..=steps {
        if step == 1 {
            sync(device);
            t0 = Instant::now();
        }
        loss = train_step(&model, &mut optimizer, &x, &y, device, None)
            .map_err(|l| anyhow::anyhow!("the loss became {l} at step {step}"))?;
    }
    sync(device);
    let tok_s = (steps as i64 * batch * cfg.context_length) as f64 / t0.elapsed().as_secs_f64();
    Ok((tok_s, loss))
}

fn main() -> anyhow::Result<()> {
    println!("llm_core {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch: {}",
        option_env!("LLM_LIBTORCH_LIB").unwrap_or("(unknown)")
    );
    println!("CPU threads: {}", tch::get_num_threads());
    let cuda_lib = init_cuda();
    println!("libtorch_cuda.so loaded: {cuda_lib}");
    println!("CUDA available: {}", Cuda::is_available());
    println!("CUDA devices: {}", Cuda::device_count());
    println!("cuDNN available: {}", Cuda::cudnn_is_available());
    let mut settings = Settings::from_env();
    let device = settings.device();
    println!("device: {device:?}");
    let on_cuda = matches!(device, Device::Cuda(_));
    let (context_length, batch, steps) = if on_cuda { (1024, 8, 10) } else { (256, 2, 3) };
    let cfg = GptConfig {
        context_length,
        ..GptConfig::gpt2_small()
    };
    let fastest = if on_cuda {
        SpeedOptions::fastest()
    } else {
        SpeedOptions::fastest_cpu()
    };
    println!("training GPT-2 124M, context {context_length}, batch {batch}, {steps} timed steps:");
    for (name, speed) in [
        ("book code (fp32)", SpeedOptions::book()),
        ("fastest", fastest),
    ] {
        let (tok_s, loss) = train_tok_s(&cfg, &speed, batch, steps, device)?;
        println!("  {name:<18} {tok_s:>10.1} tok/s   (last loss {loss:.3}; {speed})");
    }
    // generation through the KV cache, float32
    tch::manual_seed(123);
    let vs = nn::VarStore::new(device);
    let model = llm_core::model::gpt::GptModel::new(vs.root(), &cfg)?;
    let prompt = Tensor::from_slice(&[15496i64, 11, 314, 716])
        .unsqueeze(0)
        .to_device(device);
    let mut cache = KvCache::simple(cfg.n_layers as usize);
    let _ = generate_text_simple_cached(&model, &prompt, 5, &mut cache); // warm-up
    sync(device);
    let t0 = Instant::now();
    let new = 100;
    let out = generate_text_simple_cached(&model, &prompt, new, &mut cache);
    sync(device);
    println!(
        "generation (greedy, KV cache, fp32): {:.1} tok/s, {} tokens",
        new as f64 / t0.elapsed().as_secs_f64(),
        out.size()[1]
    );
    println!("OK");
    Ok(())
}
