//! Training throughput of notebook ch05's configuration: GPT-2 124M shape with
//! context 256, batch 2, AdamW, on the training part of the-verdict. Times one
//! epoch of `zero_grad` / forward / loss / backward / `step` (no evaluation or
//! sampling), after one warm-up step, and prints tokens per second and the
//! model FLOPs utilisation against a measured matmul peak. The PyTorch side
//! of the same measurement is `scripts/reference/gpt_torch.py bench`
//! (`make bench` runs both and prints the ratio).
//!
//! ```text
//! source scripts/env.sh && cargo run --release -p llm_core --example bench_train
//! ```
use std::time::Instant;

use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{self, nn, Device, Kind, Tensor};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::tokenizer::Gpt2Tokenizer;
use llm_core::train::loss::calc_loss_batch;
use llm_core::train::optim::{named_parameters, AdamW};

fn matmul_gflops() -> f64 {
    let n = 2048;
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    for _ in 0..3 {
        let _ = a.matmul(&b);
    }
    let reps = 10;
    let t0 = Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&b);
    }
    2.0 * (n as f64).powi(3) * reps as f64 / t0.elapsed().as_secs_f64() / 1e9
}

fn main() -> anyhow::Result<()> {
    let text = llm_core::data::read_to_string("the-verdict.txt")?;
    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let split_idx = (0.9 * text.len() as f64) as usize;
    let cfg = GptConfig {
        context_length: 256,
        ..GptConfig::gpt2_small()
    };
    tch::manual_seed(123);
    let train_loader =
        GptDatasetV1::new(&text[..split_idx], &tokenizer, 256, 256)?.into_loader(2, true, true);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg)?;
    let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 4e-4, 0.1);
    let (mut tokens, mut t0) = (0i64, Instant::now());
    let mut phases = [0f64; 4]; // zero_grad, forward+loss, backward, step
    for (step, (x, y)) in train_loader.epoch().into_iter().enumerate() {
        if step == 1 {
            // the first step warms up the allocator; time the rest
            t0 = Instant::now();
            tokens = 0;
            phases = [0.0; 4];
        }
        let mut t = Instant::now();
        let mut lap = |i: usize| {
            phases[i] += t.elapsed().as_secs_f64();
            t = Instant::now();
        };
        optimizer.zero_grad();
        lap(0);
        let loss = calc_loss_batch(&x, &y, &model, Device::Cpu, true);
        lap(1);
        loss.backward();
        lap(2);
        optimizer.step();
        lap(3);
        tokens += x.numel() as i64;
    }
    for (name, s) in ["zero_grad", "forward", "backward", "step"]
        .iter()
        .zip(phases)
    {
        println!("rust_{name}_s {s:.2}");
    }
    let tok_s = tokens as f64 / t0.elapsed().as_secs_f64();
    let n_params = model.num_parameters();
    let peak = matmul_gflops();
    let mfu = 6.0 * n_params as f64 * tok_s / (peak * 1e9);
    println!("rust_threads {}", tch::get_num_threads());
    println!("rust_params {n_params}");
    println!("rust_train_tokens_per_s {tok_s:.1}");
    println!("matmul_gflops {peak:.1}");
    println!("rust_mfu {mfu:.3}");
    Ok(())
}
