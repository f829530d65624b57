//! Appendix E: LoRA layers on the GPT model, merging, adapter files, and a
//! tiny seeded LoRA fine-tuning run against the book's own code
//! (`scripts/reference/gpt_torch.py lora-oracle`, PyTorch 2.13.0).

mod common;

use std::path::Path;

use llm_core::finetune::classifier::{
    count_parameters, prepare_for_classification, train_classifier_simple, ClassifierOptions,
    Trainable,
};
use llm_core::finetune::lora::{
    load_lora_adapter, lora_tensors, merge_lora, replace_linear_with_lora, save_lora_adapter,
    LoraError, LoraTargets,
};
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::model::gpt2_weights::{export_gpt2, load_gpt2, Gpt2WeightsError};
use llm_core::tch::{self, nn, nn::ModuleT, Device, Kind, Tensor};
use llm_core::text::loader::TensorLoader;
use llm_core::train::optim::{named_parameters, AdamW};
use serde_json::Value;

fn freeze(model: &GptModel) {
    for p in model.parameters() {
        let _ = p.set_requires_grad(false);
    }
}

fn tiny() -> GptConfig {
    GptConfig {
        vocab_size: 60,
        context_length: 12,
        emb_dim: 16,
        n_heads: 2,
        n_layers: 2,
        drop_rate: 0.0,
        qkv_bias: true,
    }
}

/// A seeded tiny model with LoRA on every linear layer and random `B`s (so
/// the updates are not zero).
fn adapted(seed: i64) -> (nn::VarStore, GptModel) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = GptModel::new(vs.root(), &tiny()).unwrap();
    freeze(&model);
    replace_linear_with_lora(&vs, &mut model, 4, 8.0, LoraTargets::all()).unwrap();
    tch::no_grad(|| {
        for (_, b) in lora_tensors(&model)
            .iter()
            .filter(|(n, _)| n.ends_with(".B"))
        {
            let _ = b.shallow_clone().normal_(0.0, 0.1);
        }
    });
    (vs, model)
}

fn ids() -> Tensor {
    Tensor::from_slice(&[1i64, 5, 9, 2, 33, 7, 59, 0, 4, 4, 12, 8]).view([2, 6])
}

#[test]
fn trainable_parameters_are_the_books_for_the_124m_classifier() {
    let _rng = common::rng_lock();
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = GptConfig {
        qkv_bias: true,
        drop_rate: 0.0,
        ..GptConfig::gpt2_small()
    };
    let mut model = GptModel::new(vs.root(), &cfg).unwrap();
    let before = prepare_for_classification(&vs, &mut model, 2, Trainable::All);
    assert_eq!(before.trainable, 124_441_346);
    freeze(&model);
    assert_eq!(count_parameters(&model).trainable, 0);
    let replaced = replace_linear_with_lora(&vs, &mut model, 16, 16.0, LoraTargets::all()).unwrap();
    assert_eq!(replaced, 12 * 6 + 1);
    assert_eq!(count_parameters(&model).trainable, 2_666_528);
    // attention only: 12 blocks × 4 projections × 16 × (768 + 768)
    let targets: LoraTargets = "attention".parse().unwrap();
    tch::manual_seed(123);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let mut model2 = GptModel::new(vs2.root(), &cfg).unwrap();
    freeze(&model2);
    replace_linear_with_lora(&vs2, &mut model2, 16, 16.0, targets).unwrap();
    assert_eq!(count_parameters(&model2).trainable, 12 * 4 * 16 * 1536);
}

#[test]
fn a_zero_update_leaves_the_outputs_unchanged() {
    let _rng = common::rng_lock();
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = GptModel::new(vs.root(), &tiny()).unwrap();
    let before = model.forward_t(&ids(), false);
    replace_linear_with_lora(&vs, &mut model, 4, 8.0, LoraTargets::all()).unwrap();
    assert!(model.forward_t(&ids(), false).equal(&before));
    let names: Vec<String> = lora_tensors(&model).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "trf_blocks.0.att.W_query.lora.A");
    assert_eq!(names.last().unwrap(), "out_head.lora.B");
    assert!(vs
        .variables()
        .contains_key("trf_blocks.1.ff.layers.2.lora.A"));
    assert_eq!(
        model.trf_blocks[0].att.w_query.to_string(),
        "LinearWithLoRA(Linear(in_features=16, out_features=16, bias=True), \
         LoRALayer(in_dim=16, out_dim=16, rank=4, alpha=8))"
    );
}

#[test]
fn merged_and_unmerged_outputs_agree() {
    let _rng = common::rng_lock();
    let (vs, mut model) = adapted(11);
    let unmerged = model.forward_t(&ids(), false);
    let base = {
        tch::manual_seed(11);
        let vs0 = nn::VarStore::new(Device::Cpu);
        GptModel::new(vs0.root(), &tiny())
            .unwrap()
            .forward_t(&ids(), false)
    };
    assert!(
        (&unmerged - &base).abs().max().double_value(&[]) > 1e-3,
        "the updates should change the outputs"
    );
    assert_eq!(merge_lora(&vs, &mut model), 13);
    assert!(model.linear_layers().iter().all(|(_, l)| l.lora.is_none()));
    assert!(!vs.variables().keys().any(|k| k.contains(".lora.")));
    let merged = model.forward_t(&ids(), false);
    let diff = (&merged - &unmerged).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "merged and unmerged differ by {diff}");
}

#[test]
fn an_adapter_file_reproduces_the_outputs_on_a_fresh_base_model() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    let (_vs, model) = adapted(21);
    let expected = model.forward_t(&ids(), false);
    let info = save_lora_adapter(&model, &path).unwrap();
    assert_eq!((info.rank, info.alpha, info.layers), (4, 8.0, 13));
    assert_eq!(info.to_string(), "LoRA adapter: 13 layers, rank 4, alpha 8");

    tch::manual_seed(21);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let mut fresh = GptModel::new(vs2.root(), &tiny()).unwrap();
    tch::manual_seed(99);
    let loaded = load_lora_adapter(&vs2, &mut fresh, &path).unwrap();
    assert_eq!(loaded, info);
    // loading takes the file's matrices and draws nothing from the generator
    let after = Tensor::rand([1], (Kind::Float, Device::Cpu));
    tch::manual_seed(99);
    assert!(Tensor::rand([1], (Kind::Float, Device::Cpu)).equal(&after));
    assert!(fresh.forward_t(&ids(), false).equal(&expected));
}

#[test]
fn bad_adapters_and_settings_are_named() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    let (vs, mut model) = adapted(5);
    save_lora_adapter(&model, &path).unwrap();

    // twice on the same layers
    let err = replace_linear_with_lora(&vs, &mut model, 4, 8.0, LoraTargets::all()).unwrap_err();
    assert!(
        matches!(err, LoraError::AlreadyAdapted { ref layer } if layer == "trf_blocks.0.att.W_query")
    );
    let err = load_lora_adapter(&vs, &mut model, &path).unwrap_err();
    assert!(
        err.to_string().contains("already has a LoRA update"),
        "{err}"
    );

    // out-of-range settings
    let vs2 = nn::VarStore::new(Device::Cpu);
    let mut plain = GptModel::new(vs2.root(), &tiny()).unwrap();
    let err = replace_linear_with_lora(&vs2, &mut plain, 0, 8.0, LoraTargets::all()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rank = 0 is out of range; accepted: 1 or more"
    );
    let err = "attention,mlp".parse::<LoraTargets>().unwrap_err();
    assert!(err.contains("\"mlp\" is not one of"), "{err}");

    // an adapter for a wider model: the layer and both shapes are named
    let wide = GptConfig {
        emb_dim: 32,
        ..tiny()
    };
    let vs3 = nn::VarStore::new(Device::Cpu);
    let mut other = GptModel::new(vs3.root(), &wide).unwrap();
    let err = load_lora_adapter(&vs3, &mut other, &path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("adapter.safetensors")
            && msg.contains("lora.A [16, 4]")
            && msg.contains("[32, 4]"),
        "{msg}"
    );
    assert!(other.linear_layers().iter().all(|(_, l)| l.lora.is_none()));

    // a file that is not an adapter
    let weights = dir.path().join("weights.safetensors");
    llm_core::files::save_varstore(&vs2, &weights).unwrap();
    let err = load_lora_adapter(&vs2, &mut plain, &weights).unwrap_err();
    assert!(err.to_string().contains("no \"alpha\""), "{err}");

    // nothing to save
    let err = save_lora_adapter(&plain, dir.path().join("none.safetensors")).unwrap_err();
    assert!(err.to_string().contains("no LoRA layers"), "{err}");
}

#[test]
fn only_a_merged_model_exports_to_the_hugging_face_layout() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let (vs, mut model) = adapted(9);
    let err = export_gpt2(&model, dir.path().join("unmerged")).unwrap_err();
    assert!(
        matches!(err, Gpt2WeightsError::UnmergedLora { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("merge_lora"));
    let expected = model.forward_t(&ids(), false);
    merge_lora(&vs, &mut model);
    export_gpt2(&model, dir.path().join("merged")).unwrap();
    let (_vs, again) = load_gpt2(dir.path().join("merged"), Device::Cpu).unwrap();
    let diff = (again.forward_t(&ids(), false) - expected)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5, "exported model differs by {diff}");
}

fn oracle() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lora_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tensor_2d(v: &Value) -> Tensor {
    let rows: Vec<Tensor> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            Tensor::from_slice(
                &common::floats(r)
                    .iter()
                    .map(|&x| x as i64)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    Tensor::stack(&rows, 0)
}

fn tensor_1d(v: &Value) -> Tensor {
    Tensor::from_slice(
        &common::floats(v)
            .iter()
            .map(|&x| x as i64)
            .collect::<Vec<_>>(),
    )
}

/// Each LoRA matrix's sum against the oracle's `sums` (by name).
fn assert_adapter_sums(model: &GptModel, sums: &Value, tol: f64) {
    for (name, t) in lora_tensors(model) {
        let sum = t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        common::assert_close(&name, &[sum], &[sums[&name].as_f64().unwrap()], tol);
    }
}

/// Appendix E's recipe on a tiny model, seeded as the book: a new head,
/// everything frozen, every linear layer replaced, chapter 6's training
/// loop. The LoRA draws, dropout masks, shuffles and AdamW steps must all
/// line up for the losses, accuracies and final adapters to match the
/// book's code. On the machine that made the oracle they match bit for bit;
/// the tolerance leaves room for libtorch's other CPU kernels.
#[test]
fn lora_classifier_matches_pytorch() {
    let _rng = common::rng_lock();
    let o = oracle();
    let cfg: GptConfig = serde_json::from_value(o["config"].clone()).unwrap();
    let (rank, alpha) = (o["rank"].as_i64().unwrap(), o["alpha"].as_f64().unwrap());
    let batch_size = o["batch_size"].as_u64().unwrap() as usize;
    let train_loader = TensorLoader::new(
        tensor_2d(&o["train_x"]),
        tensor_1d(&o["train_y"]),
        batch_size,
    )
    .shuffle(true)
    .drop_last(true);
    let val_loader = TensorLoader::new(tensor_2d(&o["val_x"]), tensor_1d(&o["val_y"]), batch_size);

    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = GptModel::new(vs.root(), &cfg).unwrap();
    tch::manual_seed(123);
    let before = prepare_for_classification(&vs, &mut model, 2, Trainable::All);
    assert_eq!(before.trainable, o["trainable_before"].as_i64().unwrap());
    freeze(&model);
    let frozen: Vec<Tensor> = model.parameters().iter().map(|p| p.copy()).collect();
    replace_linear_with_lora(&vs, &mut model, rank, alpha, LoraTargets::all()).unwrap();
    assert_eq!(
        count_parameters(&model).trainable,
        o["trainable_lora"].as_i64().unwrap()
    );
    assert_adapter_sums(&model, &o["lora_init_sums"], 1e-6);

    tch::manual_seed(123);
    let mut optimizer = AdamW::new(
        named_parameters(&vs, &model.parameters()),
        o["lr"].as_f64().unwrap(),
        o["weight_decay"].as_f64().unwrap(),
    );
    let opts = ClassifierOptions {
        num_epochs: o["num_epochs"].as_u64().unwrap() as usize,
        eval_freq: o["eval_freq"].as_u64().unwrap() as usize,
        eval_iter: o["eval_iter"].as_u64().unwrap() as usize,
        device: Device::Cpu,
        quiet: true,
    };
    let history =
        train_classifier_simple(&model, &train_loader, &val_loader, &mut optimizer, &opts).unwrap();
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
    common::assert_close(
        "train_accs",
        &history.train_accs,
        &common::floats(&o["train_accs"]),
        0.0,
    );
    common::assert_close(
        "val_accs",
        &history.val_accs,
        &common::floats(&o["val_accs"]),
        0.0,
    );
    assert_eq!(history.examples_seen, o["examples_seen"].as_i64().unwrap());
    assert_adapter_sums(&model, &o["lora_sums"], 1e-5);
    // the frozen weights did not move (no gradient, no weight decay)
    let base: Vec<&Tensor> = model
        .parameters()
        .into_iter()
        .filter(|p| !p.requires_grad())
        .collect();
    assert_eq!(base.len(), frozen.len());
    for (now, then) in base.iter().zip(&frozen) {
        assert!(now.equal(then));
    }
    let next = Vec::<f32>::try_from(Tensor::rand([3], (Kind::Float, Device::Cpu))).unwrap();
    let next: Vec<f64> = next.into_iter().map(f64::from).collect();
    common::assert_close("next_rand", &next, &common::floats(&o["next_rand"]), 1e-7);
}
