//! Chapter 5.1: the loss of one batch and of a loader, and perplexity.

mod common;
use common::rng_lock;

use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::nn::ModuleT;
use llm_core::tch::{self, nn, Device, Kind, Tensor};
use llm_core::text::loader::{draw_seed, TensorLoader};
use llm_core::train::loss::{calc_loss_batch, calc_loss_loader, perplexity};

fn tiny() -> (nn::VarStore, GptModel) {
    let cfg = GptConfig {
        vocab_size: 30,
        context_length: 6,
        emb_dim: 8,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.1,
        qkv_bias: false,
    };
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    (vs, model)
}

/// The cross-entropy written out: −log softmax at each target, averaged.
fn manual_ce(logits: &Tensor, targets: &Tensor) -> f64 {
    let logp = logits.log_softmax(-1, Kind::Float);
    let picked = logp.gather(-1, &targets.unsqueeze(-1), false);
    -picked.mean(Kind::Float).double_value(&[])
}

fn data(n: i64) -> (Tensor, Tensor) {
    let ids = Tensor::randint(30, [n, 7], (Kind::Int64, Device::Cpu));
    (ids.narrow(1, 0, 6), ids.narrow(1, 1, 6))
}

#[test]
fn batch_loss_is_mean_cross_entropy() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let (x, y) = data(3);
    let loss = calc_loss_batch(&x, &y, &model, Device::Cpu, false);
    let expected = manual_ce(&model.forward_t(&x, false), &y);
    assert!((loss.double_value(&[]) - expected).abs() < 1e-5);
    // it trains: gradients reach the embeddings
    loss.backward();
    assert!(
        model
            .tok_emb
            .ws
            .grad()
            .abs()
            .sum(Kind::Float)
            .double_value(&[])
            > 0.0
    );
    // -100 targets are ignored (chapter 7's padding)
    let y_masked = y.copy();
    let _ = y_masked.narrow(1, 3, 3).fill_(-100);
    let masked = calc_loss_batch(&x, &y_masked, &model, Device::Cpu, false);
    let expected = manual_ce(
        &model.forward_t(&x, false).narrow(1, 0, 3),
        &y.narrow(1, 0, 3),
    );
    assert!((masked.double_value(&[]) - expected).abs() < 1e-5);
    // train mode applies dropout: a different loss
    tch::manual_seed(5);
    let train = calc_loss_batch(&x, &y, &model, Device::Cpu, true).double_value(&[]);
    let eval = calc_loss_batch(&x, &y, &model, Device::Cpu, false).double_value(&[]);
    assert_ne!(train, eval);
}

#[test]
fn loader_loss_averages_the_first_batches() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let (x, y) = data(5);
    let loader = TensorLoader::new(x.copy(), y.copy(), 2); // batches of 2, 2, 1
    let batch = |a: i64, n: i64| {
        calc_loss_batch(
            &x.narrow(0, a, n),
            &y.narrow(0, a, n),
            &model,
            Device::Cpu,
            false,
        )
        .double_value(&[])
    };
    let all = (batch(0, 2) + batch(2, 2) + batch(4, 1)) / 3.0;
    assert!((calc_loss_loader(&loader, &model, Device::Cpu, None) - all).abs() < 1e-6);
    let first2 = (batch(0, 2) + batch(2, 2)) / 2.0;
    assert!((calc_loss_loader(&loader, &model, Device::Cpu, Some(2)) - first2).abs() < 1e-6);
    // more than there are: all of them
    assert!((calc_loss_loader(&loader, &model, Device::Cpu, Some(99)) - all).abs() < 1e-6);
    // no gradients were recorded
    assert!(!model.tok_emb.ws.grad().defined());
}

#[test]
fn loader_loss_draws_from_the_global_generator_like_pytorch() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let (x, y) = data(6);
    let shuffled = TensorLoader::new(x.copy(), y.copy(), 2).shuffle(true);
    // a shuffled loader: two draws; the loss (all batches) does not depend on the order
    tch::manual_seed(9);
    let _ = (draw_seed(), draw_seed());
    let expected = draw_seed();
    tch::manual_seed(9);
    let _ = calc_loss_loader(&shuffled, &model, Device::Cpu, Some(1));
    assert_eq!(draw_seed(), expected);
    // an empty loader: NaN, and no draw at all (the book returns first)
    let empty = TensorLoader::new(
        Tensor::zeros([0, 6], (Kind::Int64, Device::Cpu)),
        Tensor::zeros([0, 6], (Kind::Int64, Device::Cpu)),
        2,
    );
    tch::manual_seed(9);
    let expected = draw_seed();
    tch::manual_seed(9);
    assert!(calc_loss_loader(&empty, &model, Device::Cpu, None).is_nan());
    assert_eq!(draw_seed(), expected);
}

#[test]
fn perplexity_is_exp_loss() {
    assert_eq!(perplexity(0.0), 1.0);
    assert!((perplexity(2.0f64.ln()) - 2.0).abs() < 1e-12);
    // the book's untrained GPT-2: loss 10.7940 ↔ perplexity ≈ 48725
    assert!((perplexity(10.7940) - 48725.0).abs() < 5.0);
}
