//! Appendix E's claim, measured: fine-tuning the GPT-2 124M spam classifier
//! (batch 8, 120 tokens, AdamW) with LoRA (rank 16 on every linear layer)
//! against chapter 6's recipe (the last block, the final norm and the head)
//! and against training every parameter. One mode per process, so that the
//! peak resident memory (`VmHWM`) is the mode's own; `scripts/bench.sh`
//! runs all three beside the book's code (`gpt_torch.py bench-lora`).
//!
//! Prints seconds per training step (after one warm-up step), seconds per
//! epoch of the book's 130 batches, trainable parameters, the optimizer
//! state's size and the peak memory. Weights are random: the time and memory
//! of a step do not depend on their values.
//!
//! ```text
//! source scripts/env.sh && cargo run --release -p llm_core --example bench_lora -- lora
//! ```
use std::time::Instant;

use llm_core::finetune::classifier::{
    calc_loss_batch, count_parameters, prepare_for_classification, Trainable,
};
use llm_core::finetune::lora::{replace_linear_with_lora, LoraTargets};
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{self, nn, Device, Kind, Tensor};
use llm_core::train::optim::{named_parameters, AdamW};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "lora".into());
    let steps: usize = std::env::args().nth(2).map_or(Ok(5), |s| s.parse())?;
    let cfg = GptConfig {
        qkv_bias: true,
        drop_rate: 0.0,
        ..GptConfig::gpt2_small()
    };
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = GptModel::new(vs.root(), &cfg)?;
    tch::manual_seed(123);
    let (lr, counts) = match mode.as_str() {
        "full" => (
            5e-5,
            prepare_for_classification(&vs, &mut model, 2, Trainable::All),
        ),
        "last_block" => (
            5e-5,
            prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock),
        ),
        "lora" => {
            prepare_for_classification(&vs, &mut model, 2, Trainable::All);
            for p in model.parameters() {
                let _ = p.set_requires_grad(false);
            }
            replace_linear_with_lora(&vs, &mut model, 16, 16.0, LoraTargets::all())?;
            (8e-4, count_parameters(&model))
        }
        other => anyhow::bail!("mode {other:?}: accepted full, last_block, lora"),
    };
    let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), lr, 0.1);
    let x = Tensor::randint(50257, [8, 120], (Kind::Int64, Device::Cpu));
    let y = Tensor::randint(2, [8], (Kind::Int64, Device::Cpu));
    let step = |optimizer: &mut AdamW| {
        optimizer.zero_grad();
        calc_loss_batch(&x, &y, &model, Device::Cpu, true).backward();
        optimizer.step();
    };
    step(&mut optimizer);
    let t0 = Instant::now();
    for _ in 0..steps {
        step(&mut optimizer);
    }
    let per_step = t0.elapsed().as_secs_f64() / steps as f64;
    let state_mb: f64 = optimizer
        .state_tensors()
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as f64)
        .sum::<f64>()
        / (1024.0 * 1024.0);
    println!("mode {mode}: {counts}");
    println!("lora_{mode}_trainable {}", counts.trainable);
    println!("lora_{mode}_step_s {per_step:.4}");
    println!("lora_{mode}_epoch_s {:.1}", per_step * 130.0);
    println!("lora_{mode}_optimizer_state_mb {state_mb:.1}");
    println!("lora_{mode}_peak_rss_mb {:.0}", peak_rss_mb());
    Ok(())
}
