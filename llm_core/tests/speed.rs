//! The training-speed options (issue 18, the book's ch05/10): each on a tiny
//! model against the book's path, gradient accumulation against one larger
//! batch, and a padded vocabulary that is never sampled.

mod common;

use llm_core::model::generate::{generate_stream, GenerationConfig};
use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel, ModelSpeed};
use llm_core::model::kv_cache::KvCache;
use llm_core::model::precision::Precision;
use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::loader::DataLoader;
use llm_core::text::tokenizer::SimpleTokenizerV1;
use llm_core::train::loss::calc_loss_loader;
use llm_core::train::pretrain::{
    train_model_simple, train_step, train_step_accumulated, TrainOptions,
};
use llm_core::train::speed::SpeedOptions;

fn tiny(drop_rate: f64) -> GptConfig {
    GptConfig {
        vocab_size: 50,
        context_length: 16,
        emb_dim: 32,
        n_heads: 4,
        n_layers: 2,
        drop_rate,
        qkv_bias: true,
    }
}

/// Token ids with some structure to learn: a repeating pattern with noise.
fn ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + i / 5) % 50) as u32).collect()
}

/// Train `steps` steps (seeded, fixed batches) with `speed`; the mean loss
/// over the data afterwards (the book's forward pass, no dropout).
fn loss_after(speed: SpeedOptions, steps: usize) -> f64 {
    tch::manual_seed(123);
    let cfg = tiny(0.0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mut model = speed.build_model(&mut vs, &cfg).unwrap();
    let mut optimizer = speed.optimizer(&vs, &model, 1e-3, 0.1);
    let loader = GptDatasetV1::from_ids(&ids(400), 16, 16)
        .unwrap()
        .into_loader(4, false, true);
    let batches = loader.batches();
    for step in 0..steps {
        let (x, y) = &batches[step % batches.len()];
        train_step(&model, &mut optimizer, x, y, Device::Cpu, None).unwrap();
    }
    model.speed = ModelSpeed::default();
    calc_loss_loader(&loader, &model, Device::Cpu, None)
}

#[test]
fn each_option_trains_like_the_book_path() {
    let _lock = common::rng_lock();
    let steps = 15;
    let book = loss_after(SpeedOptions::book(), steps);
    let start = loss_after(SpeedOptions::book(), 0);
    assert!(
        book < start - 0.1,
        "training lowers the loss: {start} -> {book}"
    );
    // the same math, rounded differently: (option, relative tolerance)
    let cases: [(&str, SpeedOptions, f64); 8] = [
        (
            "fused AdamW",
            SpeedOptions {
                fused_adamw: true,
                ..SpeedOptions::book()
            },
            1e-5,
        ),
        (
            "native layers",
            SpeedOptions {
                native_layers: true,
                ..SpeedOptions::book()
            },
            1e-4,
        ),
        (
            "flash attention",
            SpeedOptions {
                flash_attention: true,
                ..SpeedOptions::book()
            },
            1e-4,
        ),
        (
            "fused QKV",
            SpeedOptions {
                fused_qkv: true,
                ..SpeedOptions::book()
            },
            1e-4,
        ),
        (
            "TF32 (no-op on CPU)",
            SpeedOptions {
                tf32: true,
                ..SpeedOptions::book()
            },
            0.0,
        ),
        // bfloat16 keeps 8 bits of mantissa: stated tolerance 2 %
        (
            "bf16 autocast",
            SpeedOptions {
                precision: Precision::Bf16Mixed,
                ..SpeedOptions::book()
            },
            0.02,
        ),
        (
            "bf16 weights",
            SpeedOptions {
                precision: Precision::Bf16,
                ..SpeedOptions::book()
            },
            0.03,
        ),
        (
            "bf16 master weights",
            SpeedOptions {
                precision: Precision::Bf16Master,
                ..SpeedOptions::book()
            },
            0.02,
        ),
    ];
    for (name, speed, tol) in cases {
        let loss = loss_after(speed, steps);
        let rel = (loss - book).abs() / book;
        assert!(
            rel <= tol,
            "{name}: loss {loss} vs the book path's {book} ({rel:.2e} > {tol:.0e})"
        );
    }
    llm_core::model::precision::set_tf32(false);
}

#[test]
fn fast_forward_pass_matches_the_book_forward_pass() {
    let _lock = common::rng_lock();
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = GptModel::new(vs.root(), &tiny(0.0)).unwrap();
    let x = Tensor::randint(50, [3, 16], (Kind::Int64, Device::Cpu));
    let book = model.forward_t(&x, false);
    model.speed = ModelSpeed {
        autocast_bf16: false,
        ..ModelSpeed::all()
    };
    let fast = model.forward_t(&x, false);
    let diff = (&book - &fast).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "fp32 fast paths differ by {diff}");
    model.speed = ModelSpeed::all();
    let mixed = model.forward_t(&x, false);
    assert_eq!(
        mixed.kind(),
        Kind::Float,
        "autocast logits come back float32"
    );
    let diff = (&book - &mixed).abs().max().double_value(&[]);
    let scale = book.abs().max().double_value(&[]);
    assert!(
        diff < 0.05 * scale,
        "bf16 autocast differs by {diff} (logits up to {scale})"
    );
    // the weights were never touched
    assert!(vs.variables().values().all(|t| t.kind() == Kind::Float));
}

#[test]
fn gradient_accumulation_equals_one_larger_batch() {
    let _lock = common::rng_lock();
    let loader = GptDatasetV1::from_ids(&ids(400), 16, 16)
        .unwrap()
        .into_loader(2, false, true);
    let batches = loader.batches();
    let run = |accumulate: bool| {
        tch::manual_seed(123);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = SpeedOptions::book()
            .build_model(&mut vs, &tiny(0.0))
            .unwrap();
        let mut optimizer = SpeedOptions::book().optimizer(&vs, &model, 1e-3, 0.1);
        let mut losses = Vec::new();
        let mut first_grads: Vec<Tensor> = Vec::new();
        for step in 0..4 {
            let k = 3; // three batches of 2 rows against one of 6
            let group: Vec<_> = (0..k)
                .map(|i| &batches[(step * k + i) % batches.len()])
                .collect();
            let loss = if accumulate {
                let pairs: Vec<(&Tensor, &Tensor)> = group.iter().map(|(x, y)| (x, y)).collect();
                train_step_accumulated(&model, &mut optimizer, &pairs, Device::Cpu, Some(1.0))
            } else {
                let x = Tensor::cat(&group.iter().map(|(x, _)| x).collect::<Vec<_>>(), 0);
                let y = Tensor::cat(&group.iter().map(|(_, y)| y).collect::<Vec<_>>(), 0);
                train_step(&model, &mut optimizer, &x, &y, Device::Cpu, Some(1.0))
            };
            losses.push(loss.unwrap());
            if step == 0 {
                first_grads = model.parameters().iter().map(|t| t.grad().copy()).collect();
            }
        }
        let weights: Vec<Tensor> = model.parameters().iter().map(|t| t.copy()).collect();
        (losses, first_grads, weights)
    };
    let (acc_losses, acc_grads, acc_w) = run(true);
    let (big_losses, big_grads, big_w) = run(false);
    // the first step's gradients: the same sums, added in another order
    for (a, b) in acc_grads.iter().zip(&big_grads) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "gradients differ by {diff}");
    }
    for (a, b) in acc_losses.iter().zip(&big_losses) {
        assert!(
            (a - b).abs() < 1e-6,
            "losses {acc_losses:?} vs {big_losses:?}"
        );
    }
    // AdamW divides by sqrt(v), which magnifies those last-bit differences
    // in gradients near zero: the weights after 4 steps agree to 1e-4
    for (a, b) in acc_w.iter().zip(&big_w) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "weights differ by {diff}");
    }
}

#[test]
fn training_loop_counts_optimizer_steps_with_accumulation() {
    let _lock = common::rng_lock();
    let words: Vec<String> = (0..50).map(|i| format!("w{i:02}")).collect();
    let tokenizer = SimpleTokenizerV1::from_text(&words.join(" "));
    tch::manual_seed(123);
    let train = GptDatasetV1::from_ids(&ids(400), 16, 16)
        .unwrap()
        .into_loader(2, true, true);
    let val = GptDatasetV1::from_ids(&ids(100), 16, 16)
        .unwrap()
        .into_loader(2, false, false);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = SpeedOptions::fastest()
        .build_model(&mut vs, &tiny(0.1))
        .unwrap();
    let mut optimizer = SpeedOptions::fastest().optimizer(&vs, &model, 1e-3, 0.1);
    let opts = TrainOptions {
        num_epochs: 2,
        eval_freq: 2,
        eval_iter: 1,
        start_context: "w01 w02",
        sample_tokens: 3,
        grad_accum_steps: 4,
        quiet: true,
        ..TrainOptions::default()
    };
    let history =
        train_model_simple(&model, &train, &val, &mut optimizer, &tokenizer, &opts).unwrap();
    let batches = train.num_batches(); // 12 batches of 2 rows: 3 steps an epoch
    assert_eq!(history.steps_per_epoch, batches.div_ceil(4));
    // the book's global_step starts at -1
    assert_eq!(history.global_step + 1, 2 * batches.div_ceil(4) as i64);
    assert_eq!(optimizer.step_count() as i64, history.global_step + 1);
    assert_eq!(history.tokens_seen, 2 * (batches * 2 * 16) as i64);
    let bad = TrainOptions {
        grad_accum_steps: 0,
        ..opts
    };
    let err =
        train_model_simple(&model, &train, &val, &mut optimizer, &tokenizer, &bad).unwrap_err();
    assert!(err.to_string().contains("grad_accum_steps = 0"), "{err}");
    llm_core::model::precision::set_tf32(false);
}

#[test]
fn a_padded_vocabulary_is_never_sampled() {
    let _lock = common::rng_lock();
    tch::manual_seed(5);
    let cfg = tiny(0.0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::with_padded_vocab(vs.root(), &cfg, 64).unwrap();
    assert_eq!(model.padded_vocab_size(), 64);
    // make every padded row win any argmax or draw it took part in
    tch::no_grad(|| {
        let rows = model.out_head.ws.narrow(0, 50, 14);
        let _ = rows.shallow_clone().fill_(0.0);
        let _ = rows.narrow(1, 0, 1).shallow_clone().fill_(1e4);
        let _ = model.final_norm.shift.shallow_clone().fill_(1.0);
    });
    let prompt = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
    let logits = model.forward_t(&prompt, false);
    assert_eq!(logits.size(), [1, 3, 64]);
    assert_eq!(
        logits.narrow(-1, 50, 14).max().double_value(&[]),
        f64::NEG_INFINITY
    );
    let greedy = generate_text_simple(&model, &prompt, 10, cfg.context_length);
    assert!(greedy.max().int64_value(&[]) < 50);
    let sampling = GenerationConfig {
        max_new_tokens: 10,
        temperature: 2.0,
        ..GenerationConfig::default()
    };
    let new = generate_stream(
        &model,
        &[1, 2, 3],
        &sampling,
        &mut KvCache::simple(2),
        |_| (),
    )
    .unwrap();
    assert!(new.iter().all(|&id| id < 50), "{new:?}");
    // the padded rows get no gradient: they never enter the loss
    let loader = GptDatasetV1::from_ids(&ids(100), 16, 16)
        .unwrap()
        .into_loader(2, false, true);
    let (x, y) = &loader.batches()[0];
    llm_core::train::loss::calc_loss_batch(x, y, &model, Device::Cpu, true).backward();
    let grad = model.out_head.ws.grad();
    assert_eq!(grad.narrow(0, 50, 14).abs().max().double_value(&[]), 0.0);
    assert!(grad.narrow(0, 0, 50).abs().max().double_value(&[]) > 0.0);
    let err = GptModel::with_padded_vocab(vs.root() / "other", &cfg, 0).unwrap_err();
    assert!(err.to_string().contains("pad_vocab_to = 0"), "{err}");
}
