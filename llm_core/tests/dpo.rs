//! Preference tuning with DPO against the book's own code (the functions of
//! `ch07/04_preference-tuning-with-dpo/dpo-from-scratch.ipynb`, run by
//! `scripts/reference/gpt_torch.py dpo-oracle` on PyTorch 2.13.0), and the
//! pieces on hand-made inputs.

mod common;

use llm_core::finetune::dpo::{
    compute_dpo_loss, compute_dpo_loss_batch, compute_logprobs, custom_collate_fn,
    load_preference_data, train_model_dpo_simple, DpoOptions, EncodedPreference, PreferenceCollate,
    PreferenceDataset,
};
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};
use llm_core::train::optim::{named_parameters, AdamW};
use serde_json::Value;

fn oracle() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dpo_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(name: &str, ours: &[f64], theirs: &[f64], tol: f64) {
    common::assert_close(name, ours, theirs, tol);
}

#[test]
fn loss_and_rewards_follow_the_formula() {
    let pc = Tensor::from_slice(&[-1.0f64, -2.0]);
    let pr = Tensor::from_slice(&[-3.0f64, -1.5]);
    let rc = Tensor::from_slice(&[-1.5f64, -2.5]);
    let rr = Tensor::from_slice(&[-2.0f64, -2.0]);
    let beta = 0.5;
    let (loss, chosen, rejected) = compute_dpo_loss(&pc, &pr, &rc, &rr, beta);
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let l0 = -sigmoid(beta * ((-1.0 - -3.0) - (-1.5 - -2.0))).ln();
    let l1 = -sigmoid(beta * ((-2.0 - -1.5) - (-2.5 - -2.0))).ln();
    assert!(
        (loss.double_value(&[]) - (l0 + l1) / 2.0).abs() < 1e-6,
        "{} vs {}",
        loss.double_value(&[]),
        (l0 + l1) / 2.0
    );
    assert!((chosen.double_value(&[]) - 0.5).abs() < 1e-12); // mean of 0.5, 0.5
    assert!((rejected.double_value(&[]) - (-1.0 + 0.5) / 2.0).abs() < 1e-12);
}

#[test]
fn logprobs_average_the_selected_tokens() {
    // vocabulary of 2, uniform logits: every log-probability is ln 1/2
    let logits = Tensor::zeros([1, 4, 2], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]).view([1, 4]);
    let mask = Tensor::from_slice(&[false, false, true, false]).view([1, 4]);
    let lp = compute_logprobs(&logits, &labels, Some(&mask));
    assert!((lp.double_value(&[0]) - 0.5f64.ln()).abs() < 1e-6);
    let all = compute_logprobs(&logits, &labels, None);
    assert!((all.double_value(&[0]) - 0.5f64.ln()).abs() < 1e-6);
}

#[test]
fn collate_pads_masks_and_truncates() {
    let a = EncodedPreference {
        prompt: vec![1, 2, 3],
        chosen: vec![1, 2, 3, 9, 9, 4],
        rejected: vec![1, 2, 3, 9, 9, 5, 5, 5],
    };
    let b = EncodedPreference {
        prompt: vec![1],
        chosen: vec![1, 9, 9, 6],
        rejected: vec![1, 9, 9, 7, 7],
    };
    let batch = custom_collate_fn(&[&a, &b], &PreferenceCollate::default());
    // the longest sequence (8) plus one
    assert_eq!(batch.chosen.size(), [2, 9]);
    assert_eq!(
        Vec::<i64>::try_from(batch.rejected.get(1)).unwrap(),
        [1, 9, 9, 7, 7, 50256, 50256, 50256, 50256]
    );
    let m = |t: &Tensor| Vec::<bool>::try_from(t).unwrap();
    assert_eq!(
        m(&batch.chosen_mask.get(0)),
        [false, false, false, false, false, true, false, false, false]
    );
    assert_eq!(
        m(&batch.rejected_mask.get(1)),
        [false, false, false, true, true, false, false, false, false]
    );
    // without prompt masking only the padding is masked
    let plain = PreferenceCollate {
        mask_prompt_tokens: false,
        ..Default::default()
    };
    let batch = custom_collate_fn(&[&a, &b], &plain);
    assert_eq!(
        m(&batch.chosen_mask.get(1)),
        [true, true, true, true, false, false, false, false, false]
    );
    // truncation cuts sequences and masks alike
    let cut = PreferenceCollate {
        allowed_max_length: Some(5),
        ..Default::default()
    };
    let batch = custom_collate_fn(&[&a, &b], &cut);
    assert_eq!(batch.chosen.size(), [2, 5]);
    assert_eq!(batch.rejected_mask.size(), [2, 5]);
}

#[test]
fn bad_preference_files_name_entry_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefs.json");
    std::fs::write(
        &path,
        r#"[{"instruction": "a", "input": "", "output": "b", "chosen": "c", "rejected": 4}]"#,
    )
    .unwrap();
    let e = load_preference_data(&path).unwrap_err().to_string();
    assert!(
        e.contains("prefs.json") && e.contains("entry 0") && e.contains("\"rejected\""),
        "{e}"
    );
    std::fs::write(
        &path,
        r#"[{"instruction": "a", "input": "", "output": "b", "chosen": " ", "rejected": "d"}]"#,
    )
    .unwrap();
    let e = load_preference_data(&path).unwrap_err().to_string();
    assert!(
        e.contains("entry 0") && e.contains("\"chosen\" is empty"),
        "{e}"
    );
}

#[test]
fn dpo_training_matches_the_book_code() {
    let _rng = common::rng_lock();
    let o = oracle();
    let c = &o["config"];
    let cfg = GptConfig {
        vocab_size: c["vocab_size"].as_i64().unwrap(),
        context_length: c["context_length"].as_i64().unwrap(),
        emb_dim: c["emb_dim"].as_i64().unwrap(),
        n_heads: c["n_heads"].as_i64().unwrap(),
        n_layers: c["n_layers"].as_i64().unwrap(),
        drop_rate: c["drop_rate"].as_f64().unwrap(),
        qkv_bias: c["qkv_bias"].as_bool().unwrap(),
    };
    let data =
        load_preference_data(common::data_dir().join("instruction-data-with-preference.json"))
            .unwrap();
    let (n_train, n_val) = (
        o["n_train"].as_u64().unwrap() as usize,
        o["n_val"].as_u64().unwrap() as usize,
    );
    let tokenizer = common::gpt2();
    let train = PreferenceDataset::new(&data[..n_train], tokenizer).unwrap();
    let val = PreferenceDataset::new(&data[n_train..n_train + n_val], tokenizer).unwrap();

    // the book: policy and reference built in turn (both draw their initial
    // weights), then the reference takes the policy's weights
    tch::manual_seed(o["seed"].as_i64().unwrap());
    let vs = nn::VarStore::new(Device::Cpu);
    let policy = GptModel::new(vs.root(), &cfg).unwrap();
    let mut vs_ref = nn::VarStore::new(Device::Cpu);
    let reference = GptModel::new(vs_ref.root(), &cfg).unwrap();
    vs_ref.copy(&vs).unwrap();
    for p in reference.parameters() {
        let _ = p.set_requires_grad(false);
    }

    let collate = PreferenceCollate {
        allowed_max_length: Some(o["allowed_max_length"].as_u64().unwrap() as usize),
        ..Default::default()
    };
    let batch_size = o["batch_size"].as_u64().unwrap() as usize;
    tch::manual_seed(o["seed"].as_i64().unwrap());
    let train_loader = train.into_loader(batch_size, true, true, collate);
    let val_loader = val.into_loader(batch_size, false, false, collate);

    // the first validation batch, before training (one loader iteration: one draw)
    let first = &o["first_val_batch"];
    let batch = val_loader.epoch().remove(0);
    let ids = |v: &Value| {
        Tensor::from_slice(
            &v.as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
                .collect::<Vec<_>>(),
        )
    };
    let rows = first["chosen"].as_array().unwrap().len() as i64;
    assert!(batch.chosen.equal(&ids(&first["chosen"]).view([rows, -1])));
    assert!(batch
        .rejected
        .equal(&ids(&first["rejected"]).view([rows, -1])));
    let mask_ok = |ours: &Tensor, theirs: &Value| {
        let t: Vec<bool> = theirs
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_bool().unwrap()))
            .collect();
        Vec::<bool>::try_from(ours.flatten(0, -1)).unwrap() == t
    };
    assert!(mask_ok(&batch.chosen_mask, &first["chosen_mask"]));
    assert!(mask_ok(&batch.rejected_mask, &first["rejected_mask"]));
    let lp = tch::no_grad(|| {
        compute_logprobs(
            &policy.forward_t(&batch.chosen, false),
            &batch.chosen,
            Some(&batch.chosen_mask),
        )
    });
    assert_close(
        "policy_chosen_logprobs",
        &Vec::<f64>::try_from(lp.to_kind(Kind::Double)).unwrap(),
        &floats(&first["policy_chosen_logprobs"]),
        1e-5,
    );
    let (loss, chosen, rejected) =
        tch::no_grad(|| compute_dpo_loss_batch(&batch, &policy, &reference, 0.1, false));
    assert_close(
        "loss before training",
        &[
            loss.double_value(&[]),
            chosen.double_value(&[]),
            rejected.double_value(&[]),
        ],
        &[
            first["loss"].as_f64().unwrap(),
            first["chosen_reward"].as_f64().unwrap(),
            first["rejected_reward"].as_f64().unwrap(),
        ],
        1e-6,
    );

    let before: Vec<Tensor> = reference.parameters().iter().map(|t| t.copy()).collect();
    tch::manual_seed(o["seed"].as_i64().unwrap());
    let mut optimizer = AdamW::new(
        named_parameters(&vs, &policy.parameters()),
        o["lr"].as_f64().unwrap(),
        o["weight_decay"].as_f64().unwrap(),
    );
    let opts = DpoOptions {
        num_epochs: o["num_epochs"].as_u64().unwrap() as usize,
        beta: o["beta"].as_f64().unwrap(),
        eval_freq: o["eval_freq"].as_u64().unwrap() as usize,
        eval_iter: o["eval_iter"].as_u64().unwrap() as usize,
    };
    let history = train_model_dpo_simple(
        &policy,
        &reference,
        &train_loader,
        &val_loader,
        &mut optimizer,
        &opts,
    )
    .unwrap();
    let t = &o["tracking"];
    for (name, ours) in [
        ("train_losses", &history.train_losses),
        ("train_chosen_rewards", &history.train_chosen_rewards),
        ("train_rejected_rewards", &history.train_rejected_rewards),
        ("val_losses", &history.val_losses),
        ("val_chosen_rewards", &history.val_chosen_rewards),
        ("val_rejected_rewards", &history.val_rejected_rewards),
    ] {
        assert_close(name, ours, &floats(&t[name]), 1e-5);
    }
    let tokens: Vec<i64> = t["tokens_seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(history.tokens_seen, tokens);
    // the reference never moved and never received a gradient
    for (p, b) in reference.parameters().iter().zip(&before) {
        assert!(p.equal(b));
        assert!(!p.grad().defined());
    }
    assert!(o["reference_unchanged"].as_bool().unwrap());
}

/// The oracle's setup: data, loaders, and a seeded policy and reference.
fn oracle_setup() -> (
    GptConfig,
    llm_core::finetune::dpo::PreferenceLoader,
    llm_core::finetune::dpo::PreferenceLoader,
    nn::VarStore,
    GptModel,
    GptModel,
) {
    let o = oracle();
    let c = &o["config"];
    let cfg = GptConfig {
        vocab_size: c["vocab_size"].as_i64().unwrap(),
        context_length: c["context_length"].as_i64().unwrap(),
        emb_dim: c["emb_dim"].as_i64().unwrap(),
        n_heads: c["n_heads"].as_i64().unwrap(),
        n_layers: c["n_layers"].as_i64().unwrap(),
        drop_rate: c["drop_rate"].as_f64().unwrap(),
        qkv_bias: c["qkv_bias"].as_bool().unwrap(),
    };
    let data =
        load_preference_data(common::data_dir().join("instruction-data-with-preference.json"))
            .unwrap();
    let tokenizer = common::gpt2();
    let collate = PreferenceCollate {
        allowed_max_length: Some(256),
        ..Default::default()
    };
    let train = PreferenceDataset::new(&data[..8], tokenizer)
        .unwrap()
        .into_loader(2, true, true, collate);
    let val = PreferenceDataset::new(&data[8..12], tokenizer)
        .unwrap()
        .into_loader(2, false, false, collate);
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let policy = GptModel::new(vs.root(), &cfg).unwrap();
    let mut vs_ref = nn::VarStore::new(Device::Cpu);
    let reference = GptModel::new(vs_ref.root(), &cfg).unwrap();
    vs_ref.copy(&vs).unwrap();
    std::mem::forget(vs_ref);
    (cfg, train, val, vs, policy, reference)
}

#[test]
fn a_dpo_checkpoint_resumes_exactly() {
    use llm_core::finetune::dpo::{train_model_dpo, Checkpointing, DpoHistory};
    use llm_core::train::checkpoint::load_training_checkpoint_of;
    let _rng = common::rng_lock();
    let opts = |num_epochs| DpoOptions {
        num_epochs,
        beta: 0.1,
        eval_freq: 2,
        eval_iter: 1,
    };

    // two epochs in one go
    let (_, train, val, vs, policy, reference) = oracle_setup();
    tch::manual_seed(123);
    let mut optimizer = AdamW::new(named_parameters(&vs, &policy.parameters()), 1e-3, 0.01);
    let straight = train_model_dpo(
        &policy,
        &reference,
        &train,
        &val,
        &mut optimizer,
        &opts(2),
        None,
        None,
    )
    .unwrap();

    // one epoch, a checkpoint, then a fresh process's worth of state resumes the second
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("dpo");
    let (cfg, train, val, vs, policy, reference) = oracle_setup();
    tch::manual_seed(123);
    let mut optimizer = AdamW::new(named_parameters(&vs, &policy.parameters()), 1e-3, 0.01);
    let checkpointing = Checkpointing {
        vs: &vs,
        dir: ckpt.clone(),
    };
    let first = train_model_dpo(
        &policy,
        &reference,
        &train,
        &val,
        &mut optimizer,
        &opts(1),
        Some(&checkpointing),
        None,
    )
    .unwrap();
    assert_eq!(first.epochs_done, 1);

    tch::manual_seed(999); // whatever happens in between: the checkpoint restores the generator
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let policy2 = GptModel::new(vs2.root(), &cfg).unwrap();
    let mut optimizer2 = AdamW::new(named_parameters(&vs2, &policy2.parameters()), 1e-3, 0.01);
    let info = load_training_checkpoint_of::<DpoHistory>(&ckpt, &mut vs2, &mut optimizer2).unwrap();
    assert_eq!(info.history, first);
    let resumed = train_model_dpo(
        &policy2,
        &reference,
        &train,
        &val,
        &mut optimizer2,
        &opts(2),
        None,
        Some(info.history),
    )
    .unwrap();
    assert_eq!(resumed, straight);
    let straight_weights: Vec<Tensor> = {
        let (_, train, val, vs, policy, reference) = oracle_setup();
        tch::manual_seed(123);
        let mut optimizer = AdamW::new(named_parameters(&vs, &policy.parameters()), 1e-3, 0.01);
        train_model_dpo(
            &policy,
            &reference,
            &train,
            &val,
            &mut optimizer,
            &opts(2),
            None,
            None,
        )
        .unwrap();
        policy.parameters().iter().map(|t| t.copy()).collect()
    };
    for (a, b) in policy2.parameters().iter().zip(&straight_weights) {
        assert!(a.equal(b));
    }
}
