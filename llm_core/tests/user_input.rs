//! Input that is easy to type and used to panic deep inside libtorch or be
//! silently changed: each is now an error naming the value and the accepted
//! range (the panicking conveniences say the same in their panic).

mod common;

use common::rng_lock;
use llm_core::finetune::instruct::{try_custom_collate_fn, CollateOptions, InstructionDataset};
use llm_core::model::generate::{generate, try_generate, try_generate_text_simple, GenerateError};
use llm_core::model::gpt::{generate_text_simple, GptConfig, GptModel};
use llm_core::tch::{self, nn, Device, Kind, Tensor};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::loader::{BatchSampler, TensorLoader};
use llm_core::text::tokenizer::SimpleTokenizerV1;
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::{train_model, train_model_simple, LrSchedule, TrainOptions};

fn tiny() -> (nn::VarStore, GptModel) {
    let cfg = GptConfig {
        vocab_size: 40,
        context_length: 6,
        emb_dim: 16,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.0,
        qkv_bias: false,
    };
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    (vs, model)
}

fn prompt() -> Tensor {
    Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0)
}

fn gen_err(
    model: &GptModel,
    idx: &Tensor,
    context: i64,
    temperature: f64,
    top_k: Option<i64>,
) -> String {
    try_generate(model, idx, 4, context, temperature, top_k, None)
        .unwrap_err()
        .to_string()
}

fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).unwrap_err();
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn prompts_that_cannot_be_generated_from() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    // empty, 1-D, float
    let empty = Tensor::zeros([1, 0], (Kind::Int64, Device::Cpu));
    assert_eq!(
        gen_err(&model, &empty, 6, 0.0, None),
        "the prompt is empty: generation needs at least one token to start from"
    );
    let flat = Tensor::from_slice(&[1i64, 2, 3]);
    assert!(gen_err(&model, &flat, 6, 0.0, None).contains(
        "expected shape [batch, num_tokens], got [3] (a single sequence needs .unsqueeze(0))"
    ));
    let floats = Tensor::from_slice(&[1.0f32, 2.0]).unsqueeze(0);
    assert!(gen_err(&model, &floats, 6, 0.0, None).contains("expected int64 token ids"));
    // ids outside the vocabulary, negative ids (chapter 7's -100)
    let big = Tensor::from_slice(&[1i64, 40]).unsqueeze(0);
    assert!(gen_err(&model, &big, 6, 0.0, None)
        .starts_with("token id 40 is outside the vocabulary (ids are 0 to 39)"));
    let neg = Tensor::from_slice(&[-100i64, 2]).unsqueeze(0);
    let err = gen_err(&model, &neg, 6, 0.0, None);
    assert!(
        err.starts_with("token id -100 is outside the vocabulary"),
        "{err}"
    );
    assert!(err.contains("pass the inputs, not the targets"), "{err}");
    // a context larger than the model's, or zero
    assert_eq!(
        gen_err(&model, &prompt(), 1024, 0.0, None),
        "context_size = 1024 is out of range; accepted: 1 to the model's context length 6"
    );
    assert!(gen_err(&model, &prompt(), 0, 0.0, None).starts_with("context_size = 0"));
    // the greedy loop checks the same
    let err = try_generate_text_simple(&model, &prompt(), 3, 1024).unwrap_err();
    assert!(matches!(
        err,
        GenerateError::Setting {
            name: "context_size",
            ..
        }
    ));
    // and the panicking convenience says so in its panic
    let msg = panic_message(|| {
        let (_vs, model) = tiny();
        let _ = generate_text_simple(&model, &Tensor::from_slice(&[1i64, 2]), 3, 6);
    });
    assert!(msg.contains("expected shape [batch, num_tokens]"), "{msg}");
}

#[test]
fn the_forward_pass_names_the_id_and_the_vocabulary() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    let err = model
        .try_forward(&Tensor::from_slice(&[3i64, 41, 2]).unsqueeze(0), false)
        .unwrap_err();
    assert!(err
        .to_string()
        .starts_with("token id 41 is outside the vocabulary (ids are 0 to 39)"));
    let long = Tensor::arange(7, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    assert_eq!(
        model.try_forward(&long, false).unwrap_err().to_string(),
        "the input has 7 tokens, more than the model's context length 6"
    );
    let msg = panic_message(|| {
        let (_vs, model) = tiny();
        let _ =
            tch::nn::ModuleT::forward_t(&model, &Tensor::from_slice(&[-1i64]).unsqueeze(0), false);
    });
    assert!(
        msg.starts_with("token id -1 is outside the vocabulary"),
        "{msg}"
    );
}

#[test]
fn temperatures_and_top_k_outside_their_range() {
    let _rng = rng_lock();
    let (_vs, model) = tiny();
    for t in [-1.0, f64::NAN, f64::INFINITY] {
        let err = gen_err(&model, &prompt(), 6, t, None);
        assert!(
            err.ends_with("is out of range; accepted: 0 (greedy) or a positive finite number"),
            "{t}: {err}"
        );
    }
    for k in [0, -1, 41] {
        assert_eq!(
            gen_err(&model, &prompt(), 6, 1.0, Some(k)),
            format!("top_k = {k} is out of range; accepted: 1 to the vocabulary size 40")
        );
    }
    // extreme but valid temperatures never feed inf/NaN to the sampler
    for t in [1e-300, 1e-30, 1e30, 1e300] {
        tch::manual_seed(1);
        let out = try_generate(&model, &prompt(), 5, 6, t, None, None).unwrap();
        assert_eq!(out.size(), [1, 8], "temperature {t}");
    }
    // a tiny temperature is greedy decoding
    tch::manual_seed(1);
    let cold = try_generate(&model, &prompt(), 5, 6, 1e-300, None, None).unwrap();
    assert!(cold.equal(&generate_text_simple(&model, &prompt(), 5, 6)));
    // the book's call is unchanged: temperature 0 is greedy
    assert!(
        generate(&model, &prompt(), 5, 6, 0.0, None, None).equal(&generate_text_simple(
            &model,
            &prompt(),
            5,
            6
        ))
    );
}

#[test]
fn configs_outside_their_range_fail_before_any_weight() {
    let base = GptConfig::gpt2_small();
    for (cfg, says) in [
        (
            GptConfig {
                vocab_size: -5,
                ..base
            },
            "config: vocab_size = -5 is out of range; accepted: an integer of at least 1",
        ),
        (
            GptConfig {
                drop_rate: 1.5,
                ..base
            },
            "config: drop_rate = 1.5 is out of range; accepted: 0 to 1",
        ),
        (
            GptConfig {
                drop_rate: f64::NAN,
                ..base
            },
            "config: drop_rate = NaN is out of range",
        ),
        (
            GptConfig {
                n_layers: 0,
                ..base
            },
            "config: n_layers = 0 is out of range",
        ),
        (
            GptConfig { n_heads: 5, ..base },
            "d_out (768) must be a positive multiple of num_heads (5)",
        ),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = GptModel::new(vs.root(), &cfg).unwrap_err().to_string();
        assert!(err.starts_with(says), "{err}");
        assert!(vs.variables().is_empty(), "nothing drawn for {cfg:?}");
    }
    let msg = panic_message(|| {
        llm_core::model::attention::Dropout::new(2.0);
    });
    assert_eq!(msg, "dropout rate 2 is outside the accepted range 0 to 1");
}

#[test]
fn collate_and_loaders_reject_what_they_used_to_change() {
    let batch = [vec![1i64, 2, 3], vec![4, 5]];
    let opts = CollateOptions {
        mask_instructions: true,
        ..CollateOptions::default()
    };
    assert_eq!(
        try_custom_collate_fn(&batch, Some(&[2]), &opts)
            .unwrap_err()
            .to_string(),
        "instruction_lengths has 1 entries for a batch of 2 items; give one length per item"
    );
    let empty: [Vec<i64>; 0] = [];
    assert!(try_custom_collate_fn(&empty, None, &opts).is_err());
    let zero = CollateOptions {
        allowed_max_length: Some(0),
        ..CollateOptions::default()
    };
    assert!(try_custom_collate_fn(&batch, None, &zero).is_err());
    // batch size 0: an error everywhere (it used to become 1 in into_loader)
    let ids: Vec<u32> = (0..40).collect();
    let err = GptDatasetV1::from_ids(&ids, 4, 4)
        .unwrap()
        .try_into_loader(0, false, false)
        .unwrap_err();
    assert_eq!(err.to_string(), "batch_size must be at least 1");
    assert_eq!(
        BatchSampler::try_new(10, 0).unwrap_err().to_string(),
        "batch_size = 0 is out of range; accepted: 1 or more"
    );
    let t = Tensor::zeros([4, 2], (Kind::Int64, Device::Cpu));
    assert!(TensorLoader::try_new(t.copy(), t, 0).is_err());
    let msg = panic_message(|| {
        GptDatasetV1::from_ids(&(0..40).collect::<Vec<u32>>(), 4, 4)
            .unwrap()
            .into_loader(0, false, false);
    });
    assert!(msg.contains("batch_size"), "{msg}");
    // byte-level BPE with no merges encodes any text
    let tok = llm_core::text::tokenizer::BpeTokenizer::train("ab", 256, &[]).unwrap();
    let data = vec![llm_core::finetune::instruct::InstructionEntry::new(
        "a", "", "b",
    )];
    let ds = InstructionDataset::new(
        &data,
        &tok,
        llm_core::finetune::instruct::PromptStyle::Alpaca,
    )
    .unwrap();
    assert!(ds
        .try_into_loader(0, false, false, CollateOptions::default())
        .is_err());
}

#[test]
fn learning_rates_and_epochs_outside_their_range() {
    let _rng = rng_lock();
    for lr in [-1e-3, f64::NAN, f64::INFINITY] {
        let err = AdamW::try_new(vec![], lr, 0.1).unwrap_err().to_string();
        assert!(
            err.ends_with("is out of range; accepted: a finite number, 0 or more"),
            "{err}"
        );
    }
    let text = "the cat sat on the mat and the dog sat on the log ".repeat(4);
    let tok = SimpleTokenizerV1::from_text(&text);
    let ids = llm_core::text::tokenizer::Tokenizer::encode(&tok, &text).unwrap();
    let cfg = GptConfig {
        vocab_size: 10,
        context_length: 8,
        emb_dim: 16,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.0,
        qkv_bias: false,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let loader = GptDatasetV1::from_ids(&ids, 8, 8)
        .unwrap()
        .into_loader(2, false, false);
    let mut opt = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-3, 0.1);
    let before: Vec<Tensor> = model.parameters().iter().map(|t| t.copy()).collect();
    let quiet = || TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    let cases: Vec<(TrainOptions, &str)> = vec![
        (
            TrainOptions {
                num_epochs: 0,
                ..quiet()
            },
            "num_epochs = 0 is out of range; accepted: 1 or more",
        ),
        (
            TrainOptions {
                eval_freq: 0,
                ..quiet()
            },
            "eval_freq = 0 is out of range",
        ),
        (
            TrainOptions {
                eval_iter: 0,
                ..quiet()
            },
            "eval_iter = 0 is out of range",
        ),
    ];
    for (opts, says) in cases {
        let err = train_model_simple(&model, &loader, &loader, &mut opt, &tok, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(says), "{err}");
    }
    // a NaN learning rate set on the optimizer after it was built
    opt.lr = f64::NAN;
    let err = train_model_simple(&model, &loader, &loader, &mut opt, &tok, &quiet())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "lr = NaN is out of range; accepted: a finite number, 0 or more"
    );
    opt.lr = 1e-3;
    let schedule = LrSchedule {
        initial_lr: 1e-5,
        peak_lr: -5e-4,
        min_lr: 1e-5,
        warmup_steps: 2,
        total_steps: 10,
        max_norm: Some(1.0),
    };
    let err = train_model(
        &model,
        &loader,
        &loader,
        &mut opt,
        &tok,
        &quiet(),
        &schedule,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("peak_lr = -0.0005 is out of range"),
        "{err}"
    );
    // resuming with no epochs left
    let done = llm_core::train::pretrain::TrainHistory {
        epochs_completed: 3,
        ..Default::default()
    };
    let opts = TrainOptions {
        num_epochs: 3,
        resume: Some(done),
        ..quiet()
    };
    let err = train_model_simple(&model, &loader, &loader, &mut opt, &tok, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than the 3 epochs the resumed run has completed"),
        "{err}"
    );
    // nothing trained in any of these
    assert!(model
        .parameters()
        .iter()
        .zip(&before)
        .all(|(a, b)| a.equal(b)));
}

#[test]
fn smoke_flags_are_read_or_refused() {
    use llm_core::settings::parse_flag;
    for on in ["1", "true", "yes", "on", "ON", " True "] {
        assert_eq!(parse_flag(on), Some(true), "{on}");
    }
    for off in ["", "0", "false", "no", "off", "OFF"] {
        assert_eq!(parse_flag(off), Some(false), "{off}");
    }
    for bad in ["smoke", "2", "y", "enable"] {
        assert_eq!(parse_flag(bad), None, "{bad}");
    }
}
