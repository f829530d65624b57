//! Chapter 5.2 and appendix D: the training loops against PyTorch, the
//! book's seeded initial losses, resuming from a checkpoint, and divergence.

mod common;

use std::path::Path;

use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{self, nn, Device, Kind, Tensor};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::loader::TensorLoader;
use llm_core::text::tokenizer::{Gpt2Tokenizer, SimpleTokenizerV1};
use llm_core::train::checkpoint::{load_training_checkpoint, read_checkpoint_info};
use llm_core::train::loss::calc_loss_loader;
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::{
    train_model, train_model_simple, Checkpointing, LrSchedule, TrainError, TrainHistory,
    TrainOptions,
};
use serde_json::Value;

fn oracle() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/train_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A tokenizer whose 50 words are the ids 0..50 (for the samples).
fn word_tokenizer() -> SimpleTokenizerV1 {
    let words: Vec<String> = (0..50).map(|i| format!("w{i:02}")).collect();
    SimpleTokenizerV1::from_text(&words.join(" "))
}

/// The tiny appendix-D run of `scripts/reference/gpt_torch.py train-oracle`
/// (PyTorch 2.13.0, same libtorch): dropout masks, shuffled batches, AdamW,
/// warm-up, cosine decay and clipping must all line up for the evaluation
/// losses and the final weights to match. On the machine that made the
/// oracle (AVX-512) they match bit for bit; the tolerances leave room for
/// libtorch's other CPU kernels (AVX2) elsewhere.
#[test]
fn training_matches_pytorch() {
    let _lock = common::rng_lock();
    let o = oracle();
    let cfg: GptConfig = serde_json::from_value(o["config"].clone()).unwrap();
    let (max_length, stride, batch) = (8, 4, 4);
    tch::manual_seed(123);
    let train_loader = GptDatasetV1::from_ids(&ids(&o["train_ids"]), max_length, stride)
        .unwrap()
        .into_loader(batch, true, true);
    let val_loader = GptDatasetV1::from_ids(&ids(&o["val_ids"]), max_length, stride)
        .unwrap()
        .into_loader(batch, false, false);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 5e-3, 0.1);
    let n_epochs = o["n_epochs"].as_u64().unwrap() as usize;
    let schedule = LrSchedule {
        initial_lr: 1e-4,
        peak_lr: 5e-3,
        min_lr: 1e-5,
        warmup_steps: o["warmup_steps"].as_u64().unwrap() as usize,
        total_steps: train_loader.len() * n_epochs,
        max_norm: Some(1.0),
    };
    let opts = TrainOptions {
        num_epochs: n_epochs,
        eval_freq: 3,
        eval_iter: 2,
        start_context: "w01 w02",
        sample_tokens: 0,
        quiet: true,
        ..TrainOptions::default()
    };
    let tokenizer = word_tokenizer();
    let history = train_model(
        &model,
        &train_loader,
        &val_loader,
        &mut optimizer,
        &tokenizer,
        &opts,
        &schedule,
    )
    .unwrap();

    common::assert_close("lrs", &history.track_lrs, &common::floats(&o["lrs"]), 1e-12);
    common::assert_close(
        "train_losses",
        &history.train_losses,
        &common::floats(&o["train_losses"]),
        1e-5,
    );
    common::assert_close(
        "val_losses",
        &history.val_losses,
        &common::floats(&o["val_losses"]),
        1e-5,
    );
    let tokens: Vec<f64> = history
        .track_tokens_seen
        .iter()
        .map(|&t| t as f64)
        .collect();
    common::assert_close(
        "tokens_seen",
        &tokens,
        &common::floats(&o["tokens_seen"]),
        0.0,
    );
    let vars = vs.variables();
    for (name, sum) in o["param_sums"].as_object().unwrap() {
        let ours = vars
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"))
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
        common::assert_close(name, &[ours], &[sum.as_f64().unwrap()], 1e-5);
    }
    // and the generator is where PyTorch left it
    let next =
        Vec::<f64>::try_from(Tensor::rand([3], (Kind::Float, Device::Cpu)).to_kind(Kind::Double))
            .unwrap();
    common::assert_close("next_rand", &next, &common::floats(&o["next_rand"]), 0.0);
}

/// §5.1.3: seeded as the book, the untrained GPT-2 124M (context 256) has a
/// loss of 10.98758 on the training part of the-verdict and 10.98111 on the
/// validation part.
#[test]
fn book_initial_losses_on_the_verdict() {
    let _lock = common::rng_lock();
    let text = std::fs::read_to_string(common::data_dir().join("the-verdict.txt")).unwrap();
    let tokenizer = Gpt2Tokenizer::from_files(
        common::data_dir().join("gpt2/encoder.json"),
        common::data_dir().join("gpt2/vocab.bpe"),
    )
    .unwrap();
    let cfg = GptConfig {
        context_length: 256,
        ..GptConfig::gpt2_small()
    };
    let split_idx = (0.9 * text.len() as f64) as usize;
    let (train_text, val_text) = text.split_at(split_idx);
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    tch::manual_seed(123);
    let train_loader = GptDatasetV1::new(train_text, &tokenizer, 256, 256)
        .unwrap()
        .into_loader(2, true, true);
    let val_loader = GptDatasetV1::new(val_text, &tokenizer, 256, 256)
        .unwrap()
        .into_loader(2, false, false);
    assert_eq!((train_loader.len(), val_loader.len()), (9, 1));
    let train_loss = calc_loss_loader(&train_loader, &model, Device::Cpu, None);
    let val_loss = calc_loss_loader(&val_loader, &model, Device::Cpu, None);
    assert!(
        (train_loss - 10.98758).abs() < 5e-5,
        "train loss {train_loss}"
    );
    assert!((val_loss - 10.98111).abs() < 5e-5, "val loss {val_loss}");
}

fn tiny_setup(seed: i64) -> (nn::VarStore, GptModel, AdamW, TensorLoader, TensorLoader) {
    let cfg = GptConfig {
        vocab_size: 50,
        context_length: 8,
        emb_dim: 16,
        n_heads: 2,
        n_layers: 2,
        drop_rate: 0.1,
        qkv_bias: false,
    };
    tch::manual_seed(0);
    let data = Tensor::randint(50, [200], (Kind::Int64, Device::Cpu));
    let data: Vec<u32> = Vec::<i64>::try_from(&data)
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect();
    tch::manual_seed(seed);
    let train = GptDatasetV1::from_ids(&data[..160], 8, 4)
        .unwrap()
        .into_loader(4, true, true);
    let val = GptDatasetV1::from_ids(&data[160..], 8, 4)
        .unwrap()
        .into_loader(4, false, false);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let opt = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-2, 0.1);
    (vs, model, opt, train, val)
}

fn opts(num_epochs: usize) -> TrainOptions<'static> {
    TrainOptions {
        num_epochs,
        eval_freq: 4,
        eval_iter: 2,
        start_context: "w01",
        sample_tokens: 3,
        quiet: true,
        ..TrainOptions::default()
    }
}

/// Train 4 epochs in one go; then 2 epochs with a checkpoint, a fresh
/// process-like start (new model, new optimizer, the generator elsewhere),
/// loading the checkpoint and 2 more: every weight, loss and sample agrees.
#[test]
fn resumed_run_continues_exactly() {
    let _lock = common::rng_lock();
    let tokenizer = word_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny");

    let (vs, model, mut opt, train, val) = tiny_setup(123);
    let whole = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &opts(4)).unwrap();
    let whole_weights = vs.variables();
    let whole_next = Tensor::rand([4], (Kind::Float, Device::Cpu));

    let (vs, model, mut opt, train, val) = tiny_setup(123);
    let first = TrainOptions {
        checkpoint: Some(Checkpointing {
            vs: &vs,
            dir: ckpt.clone(),
        }),
        ..opts(2)
    };
    let half = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &first).unwrap();
    assert_eq!(half.epochs_completed, 2);
    drop((vs, model, opt));

    // a new start: different weights and generator state until the checkpoint is loaded
    let (mut vs, model, mut opt, train, val) = tiny_setup(999);
    let info = read_checkpoint_info(&ckpt).unwrap();
    assert_eq!(info.history.epochs_completed, 2);
    let info = load_training_checkpoint(&ckpt, &mut vs, &mut opt).unwrap();
    assert_eq!(opt.step_count(), half.global_step as u64 + 1);
    let rest = TrainOptions {
        resume: Some(info.history),
        ..opts(4)
    };
    let resumed = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &rest).unwrap();

    let strip = |h: &TrainHistory| TrainHistory {
        train_seconds: 0.0,
        ..h.clone()
    };
    assert_eq!(strip(&resumed), strip(&whole));
    for (name, w) in vs.variables() {
        assert!(
            w.equal(&whole_weights[&name]),
            "{name} differs after resuming"
        );
    }
    assert!(Tensor::rand([4], (Kind::Float, Device::Cpu)).equal(&whole_next));
    // only the checkpoint directory itself is left (no temporary or old copies)
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tiny")]);
}

/// Stopped within an epoch (a Ctrl-C, here raised by the evaluation hook
/// at the fourth evaluation, after step 13 of 9 a epoch) after a checkpoint
/// every 5 steps and at the stop, then resumed in a fresh start: the same
/// run as one without a stop. Also stopped after the last batch of an
/// epoch, before its sample (the third evaluation, after step 9).
#[test]
fn run_stopped_within_an_epoch_resumes_exactly() {
    for (at_eval, step, epochs, batches) in [(4, 12, 1, 4), (3, 8, 0, 9)] {
        stop_and_resume(at_eval, step, epochs, batches);
    }
}

fn stop_and_resume(at_eval: usize, step: i64, epochs: usize, batches: usize) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _lock = common::rng_lock();
    let tokenizer = word_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny");

    let (vs, model, mut opt, train, val) = tiny_setup(123);
    let whole = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &opts(3)).unwrap();
    let whole_weights = vs.variables();
    assert_eq!(whole.steps_per_epoch, 9);

    let (vs, model, mut opt, train, val) = tiny_setup(123);
    let stop = AtomicBool::new(false);
    let evaluations = std::cell::Cell::new(0);
    let hook = |h: &TrainHistory| {
        evaluations.set(h.train_losses.len());
        if h.train_losses.len() == at_eval {
            stop.store(true, Ordering::SeqCst);
        }
    };
    let first = TrainOptions {
        checkpoint: Some(Checkpointing {
            vs: &vs,
            dir: ckpt.clone(),
        }),
        checkpoint_every: 5,
        stop: Some(&stop),
        on_eval: Some(&hook),
        ..opts(3)
    };
    let err = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &first).unwrap_err();
    let TrainError::Stopped {
        global_step,
        saved,
        history,
    } = err
    else {
        panic!("expected a stop, got {err}");
    };
    assert_eq!((global_step, evaluations.get()), (step, at_eval));
    assert_eq!(saved.as_deref(), Some(ckpt.as_path()));
    assert_eq!(
        (history.epochs_completed, history.batches_done),
        (epochs, batches)
    );
    drop((vs, model, opt));

    let (mut vs, model, mut opt, train, val) = tiny_setup(999);
    let info = load_training_checkpoint(&ckpt, &mut vs, &mut opt).unwrap();
    assert_eq!(info.history.global_step, step);
    assert!(info.history.epoch_rng.is_some());
    let rest = TrainOptions {
        resume: Some(info.history),
        ..opts(3)
    };
    let resumed = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &rest).unwrap();
    let strip = |h: &TrainHistory| TrainHistory {
        train_seconds: 0.0,
        ..h.clone()
    };
    assert_eq!(strip(&resumed), strip(&whole));
    for (name, w) in vs.variables() {
        assert!(
            w.equal(&whole_weights[&name]),
            "{name} differs after resuming"
        );
    }
}

#[test]
fn checkpoint_errors_name_the_file() {
    let _lock = common::rng_lock();
    let (mut vs, _model, mut opt, _, _) = tiny_setup(1);
    let dir = tempfile::tempdir().unwrap();
    let err = load_training_checkpoint(dir.path().join("missing"), &mut vs, &mut opt).unwrap_err();
    assert!(err.to_string().contains("missing/checkpoint.json"), "{err}");

    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("checkpoint.json"), "{\"format\": 1}").unwrap();
    let err = read_checkpoint_info(&bad).unwrap_err();
    assert!(err.to_string().contains("bad/checkpoint.json"), "{err}");
}

#[test]
fn a_nan_loss_stops_training_and_names_the_step() {
    let _lock = common::rng_lock();
    let tokenizer = word_tokenizer();
    let (_vs, model, mut opt, train, val) = tiny_setup(5);
    tch::no_grad(|| {
        let _ = model.out_head.ws.shallow_clone().fill_(f64::NAN);
    });
    let err = train_model_simple(&model, &train, &val, &mut opt, &tokenizer, &opts(2)).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                epoch: 1,
                step: 0,
                global_step: 0,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("NaN at epoch 1, step 0"), "{msg}");
    assert_eq!(opt.step_count(), 0);
}

#[test]
fn lr_schedule_is_the_books() {
    let s = LrSchedule {
        initial_lr: 3e-5,
        peak_lr: 1e-3,
        min_lr: 1e-6,
        warmup_steps: 10,
        total_steps: 50,
        max_norm: Some(1.0),
    };
    let lrs = s.lrs();
    assert_eq!(lrs.len(), 50);
    // linear warm-up
    for w in lrs[..10].windows(2) {
        assert!((w[1] - w[0] - (1e-3 - 3e-5) / 10.0).abs() < 1e-15);
    }
    // cosine from the peak, falling monotonically towards min_lr
    assert_eq!(lrs[10], 1e-3);
    assert!(lrs[10..].windows(2).all(|w| w[1] < w[0]));
    // the book's schedule reaches min_lr only one step after the last
    assert!(lrs[49] > 1e-6 && lrs[49] < 3e-6);
    assert!(!s.clips_at(9) && s.clips_at(10));
    let never = LrSchedule {
        max_norm: None,
        ..s
    };
    assert!(!never.clips_at(40));
}
