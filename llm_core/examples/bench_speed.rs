//! The speed ladder (issue 18, the book's ch05/10) on this machine at
//! notebook ch05's shape: GPT-2 124M, context 256, batch 2, AdamW (lr 4e-4,
//! weight decay 0.1), the training part of the-verdict, seeded as the book.
//! For one rung of [`SpeedOptions::ladder`] (or every rung, each in this
//! process), trains `--steps` steps and prints the tokens/s (after one
//! warm-up step), the peak resident memory and the loss over the training
//! set afterwards (evaluation mode). `scripts/bench.sh` runs one process per
//! rung (so each peak is the rung's own) next to the book's `00_orig.py`
//! and `01_opt_single_gpu.py` models (`scripts/reference/gpt_torch.py
//! bench-speed`).
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p llm_core --example bench_speed -- --list
//! cargo run --release -p llm_core --example bench_speed -- 3 --steps 50
//! ```
use std::time::Instant;

use llm_core::model::gpt::{GptConfig, ModelSpeed};
use llm_core::settings::Settings;
use llm_core::tch::{self, nn, Device};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::loader::DataLoader;
use llm_core::text::tokenizer::Gpt2Tokenizer;
use llm_core::train::loss::calc_loss_loader;
use llm_core::train::pretrain::train_step;
use llm_core::train::speed::{Rung, SpeedOptions};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn run(i: usize, rung: &Rung, steps: usize, device: Device) -> anyhow::Result<()> {
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
    let speed = rung.options;
    let mut vs = nn::VarStore::new(device);
    let mut model = speed.build_model(&mut vs, &cfg)?;
    let mut optimizer = speed.optimizer(&vs, &model, 4e-4, 0.1);
    let (mut step, mut tokens, mut t0) = (0, 0i64, Instant::now());
    'outer: loop {
        for (x, y) in train_loader.batches() {
            if step == steps {
                break 'outer;
            }
            if step == 1 {
                t0 = Instant::now();
                tokens = 0;
            }
            let (x, y) = (x.to_device(device), y.to_device(device));
            train_step(&model, &mut optimizer, &x, &y, device, None)
                .map_err(|l| anyhow::anyhow!("loss {l} at step {step}"))?;
            tokens += x.numel() as i64;
            step += 1;
        }
    }
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    let tok_s = tokens as f64 / t0.elapsed().as_secs_f64();
    model.speed = ModelSpeed::default();
    let loss = tch::no_grad(|| calc_loss_loader(&train_loader, &model, device, None));
    println!("speed_{i}_name {}", rung.name);
    println!("speed_{i}_options {speed}");
    println!("speed_{i}_tok_s {tok_s:.1}");
    println!("speed_{i}_loss {loss:.4}");
    println!("speed_{i}_peak_rss_mb {:.0}", peak_rss_mb());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rungs = SpeedOptions::ladder();
    if args.iter().any(|a| a == "--list") {
        for (i, r) in rungs.iter().enumerate() {
            let cuda = if r.cuda_only { " (CUDA only)" } else { "" };
            println!("{i} {}{cuda}: {}", r.name, r.options);
        }
        return Ok(());
    }
    let steps = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|p| args.get(p + 1)?.parse().ok())
        .unwrap_or(50);
    let device = Settings::from_env().device();
    println!("speed_device {device:?}");
    println!("speed_threads {}", tch::get_num_threads());
    println!("speed_steps {steps}");
    let which: Vec<usize> = match args.first().map(String::as_str) {
        None | Some("all") | Some("--steps") => (0..rungs.len()).collect(),
        Some(n) => vec![n.parse()?],
    };
    for i in which {
        let rung = rungs
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("rung {i}: the ladder has 0 to {}", rungs.len() - 1))?;
        if rung.cuda_only && device == Device::Cpu {
            println!("speed_{i}_skipped {} changes nothing on the CPU", rung.name);
            continue;
        }
        run(i, rung, steps, device)?;
    }
    Ok(())
}
