//! Times one forward and backward pass of the book's `MultiHeadAttention`
//! and of `MhaSdpa` (libtorch's fused scaled-dot-product attention), with the
//! same weights, side by side.
//!
//! ```text
//! source scripts/env.sh && cargo run --release -p llm_core --example bench_attention
//! LLM_BATCH_SIZE=2 LLM_NUM_TOKENS=256 LLM_DEVICE=cuda cargo run --release -p llm_core --example bench_attention
//! ```
//!
//! Settings (environment `LLM_<NAME>`): `batch_size` (8), `num_tokens` (1024),
//! `emb_dim` (768), `num_heads` (12), `runs` (5, after one warm-up run),
//! `seed` (123), `device` (auto).
use std::time::Instant;

use llm_core::model::attention::{MhaSdpa, MultiHeadAttention};
use llm_core::tch::nn::{self, ModuleT};
use llm_core::tch::{self, Device, Kind, Tensor};
use llm_core::Settings;

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn zero_grads(vs: &nn::VarStore) {
    for v in vs.trainable_variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// Seconds for each of `runs` forward+backward passes, after one warm-up.
fn time_it(layer: &dyn ModuleT, x: &Tensor, vs: &nn::VarStore, runs: usize) -> Vec<f64> {
    let step = || {
        let out = layer.forward_t(x, true);
        out.sum(Kind::Float).backward();
    };
    zero_grads(vs);
    step();
    sync(vs.device());
    (0..runs)
        .map(|_| {
            zero_grads(vs);
            sync(vs.device());
            let t0 = Instant::now();
            step();
            sync(vs.device());
            t0.elapsed().as_secs_f64()
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let mut settings = Settings::from_env();
    let batch_size: i64 = settings.get("batch_size", 8);
    let num_tokens: i64 = settings.get("num_tokens", 1024);
    let emb_dim: i64 = settings.get("emb_dim", 768);
    let num_heads: i64 = settings.get("num_heads", 12);
    let runs: usize = settings.get("runs", 5);
    let seed: i64 = settings.get("seed", 123);
    let device = settings.device();

    tch::manual_seed(seed);
    let vs = nn::VarStore::new(device);
    let mha = MultiHeadAttention::new(
        vs.root(),
        emb_dim,
        emb_dim,
        num_tokens,
        0.0,
        num_heads,
        false,
    )?;
    let sdpa = MhaSdpa::from(&mha);
    let x = Tensor::rand(
        [batch_size, num_tokens, emb_dim],
        (Kind::Float, Device::Cpu),
    )
    .to_device(device);

    let diff = tch::no_grad(|| {
        (mha.forward_t(&x, false) - sdpa.forward_t(&x, false))
            .abs()
            .max()
            .double_value(&[])
    });

    let threads = tch::get_num_threads();
    println!(
        "forward + backward, batch {batch_size} × {num_tokens} tokens × {emb_dim} dims, \
         {num_heads} heads, dropout 0, {device:?} ({threads} threads); \
         one warm-up, then median of {runs} runs"
    );
    println!("max |MultiHeadAttention − MhaSdpa| on the outputs: {diff:.2e}");
    let t_mha = time_it(&mha, &x, &vs, runs);
    let t_sdpa = time_it(&sdpa, &x, &vs, runs);
    let (m_mha, m_sdpa) = (median(t_mha.clone()), median(t_sdpa.clone()));
    let min = |t: &[f64]| t.iter().copied().fold(f64::INFINITY, f64::min);
    println!();
    println!("| implementation     | median ms | min ms | ratio to MhaSdpa |");
    println!("|--------------------|----------:|-------:|-----------------:|");
    println!(
        "| MultiHeadAttention | {:9.1} | {:6.1} | {:15.2}× |",
        m_mha * 1e3,
        min(&t_mha) * 1e3,
        m_mha / m_sdpa
    );
    println!(
        "| MhaSdpa            | {:9.1} | {:6.1} | {:15.2}× |",
        m_sdpa * 1e3,
        min(&t_sdpa) * 1e3,
        1.0
    );
    Ok(())
}
