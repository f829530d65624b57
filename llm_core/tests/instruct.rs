//! Chapter 7: the instruction data, the book's split, and the padded,
//! shifted, −100-masked batches — every batch of a seeded epoch checked
//! against the book's PyTorch code (`scripts/reference/gpt_torch.py
//! instruct-oracle`, PyTorch 2.13.0 and tiktoken), and a tiny fine-tuning
//! run through `train_model_simple` checked against the same script.

mod common;

use std::path::Path;

use llm_core::eval::metrics::ResponseScores;
use llm_core::finetune::instruct::{
    format_input, load_instruction_data, split_data, CollateOptions, InstructionDataset,
    InstructionEntry, PromptStyle,
};
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{self, nn, Device};
use llm_core::train::loss::calc_loss_loader;
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::{train_model_simple, TrainOptions};
use serde_json::Value;

fn oracle() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/instruct_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn data() -> Vec<InstructionEntry> {
    load_instruction_data(common::data_dir().join("instruction-data.json")).unwrap()
}

/// Shape, input sum, target sum and number of −100 targets of each batch.
fn epoch_figures(
    dataset: &InstructionDataset,
    shuffle: bool,
    drop_last: bool,
    collate: CollateOptions,
) -> Vec<Value> {
    tch::manual_seed(123);
    let loader = dataset.clone().into_loader(8, shuffle, drop_last, collate);
    loader
        .epoch()
        .into_iter()
        .map(|(x, y)| {
            serde_json::json!({
                "shape": x.size(),
                "input_sum": x.sum(tch::Kind::Int64).int64_value(&[]),
                "target_sum": y.sum(tch::Kind::Int64).int64_value(&[]),
                "ignored": y.eq(-100).sum(tch::Kind::Int64).int64_value(&[]),
            })
        })
        .collect()
}

#[test]
fn the_books_split_and_test_set() {
    let data = data();
    assert_eq!(data.len(), 1100);
    let split = split_data(&data, None);
    assert_eq!(
        split.to_string(),
        "Training set length: 935\nValidation set length: 55\nTest set length: 110"
    );
    // the book's responses file holds the test set, in order
    let book =
        load_instruction_data(common::data_dir().join("instruction-data-with-response.json"))
            .unwrap();
    assert_eq!(book.len(), 110);
    for (i, (ours, theirs)) in split.test_data.iter().zip(&book).enumerate() {
        assert_eq!(
            (&ours.instruction, &ours.input, &ours.output),
            (&theirs.instruction, &theirs.input, &theirs.output),
            "test entry {i}"
        );
        assert!(theirs.model_response.is_some());
    }
    // a seeded split shuffles, keeping the sizes
    let seeded = split_data(&data, Some(123));
    assert_eq!(seeded.train_data.len(), 935);
    assert_ne!(seeded.test_data, split.test_data);
    // the book's GPT-2 medium responses, scored offline
    let scores = ResponseScores::of_entries(&book).unwrap();
    assert_eq!(scores.n, 110);
    assert!(
        scores.rouge_l_f1 > 0.3 && scores.rouge_l_f1 < 1.0,
        "{scores}"
    );
}

#[test]
fn every_batch_of_a_seeded_epoch_is_the_books() {
    let _lock = common::rng_lock();
    let o = oracle();
    let split = split_data(&data(), None);
    let sizes = [
        split.train_data.len(),
        split.val_data.len(),
        split.test_data.len(),
    ];
    assert_eq!(serde_json::json!(sizes), o["sizes"]);
    let tokenizer = common::gpt2();
    let train = InstructionDataset::new(&split.train_data, tokenizer, PromptStyle::Alpaca).unwrap();
    assert_eq!(
        serde_json::json!(train.encoded_texts[0]),
        o["first_train_tokens"]
    );
    assert_eq!(
        serde_json::json!(train.instruction_lengths[0]),
        o["first_train_instruction_length"]
    );
    let val = InstructionDataset::new(&split.val_data, tokenizer, PromptStyle::Alpaca).unwrap();
    let phi3 = InstructionDataset::new(&split.train_data, tokenizer, PromptStyle::Phi3).unwrap();
    let book = CollateOptions {
        allowed_max_length: Some(1024),
        ..CollateOptions::default()
    };
    let cases = [
        ("train_epoch", epoch_figures(&train, true, true, book)),
        ("val_epoch", epoch_figures(&val, false, false, book)),
        (
            "train_epoch_masked",
            epoch_figures(
                &train,
                true,
                true,
                CollateOptions {
                    mask_instructions: true,
                    ..book
                },
            ),
        ),
        (
            "train_epoch_truncated",
            epoch_figures(
                &train,
                true,
                true,
                CollateOptions {
                    allowed_max_length: Some(64),
                    ..book
                },
            ),
        ),
        (
            "train_epoch_phi3",
            epoch_figures(&phi3, true, true, CollateOptions::default()),
        ),
    ];
    for (name, ours) in cases {
        let theirs = o[name].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: number of batches");
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            assert_eq!(a, b, "{name}: batch {i}");
        }
    }
    // the book's first shapes: [8, 61], [8, 76], [8, 73]
    let shapes: Vec<&Value> = o["train_epoch"].as_array().unwrap()[..3]
        .iter()
        .map(|b| &b["shape"])
        .collect();
    assert_eq!(
        serde_json::json!(shapes),
        serde_json::json!([[8, 61], [8, 76], [8, 73]])
    );
}

/// Two epochs of a tiny random GPT on 40 entries with the book's calls:
/// the losses (which ignore the −100 targets), tokens seen and greedy
/// samples equal PyTorch's.
#[test]
fn tiny_fine_tuning_run_matches_pytorch() {
    let _lock = common::rng_lock();
    let o = oracle();
    let run = &o["tiny_run"];
    let cfg: GptConfig = serde_json::from_value(run["config"].clone()).unwrap();
    let split = split_data(&data(), None);
    let tokenizer = common::gpt2();
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptModel::new(vs.root(), &cfg).unwrap();
    let collate = CollateOptions {
        allowed_max_length: Some(128),
        ..CollateOptions::default()
    };
    tch::manual_seed(123);
    let train_loader =
        InstructionDataset::new(&split.train_data[..40], tokenizer, PromptStyle::Alpaca)
            .unwrap()
            .into_loader(8, true, true, collate);
    let val_loader = InstructionDataset::new(&split.val_data[..16], tokenizer, PromptStyle::Alpaca)
        .unwrap()
        .into_loader(8, false, false, collate);
    let initial = [
        calc_loss_loader(&train_loader, &model, Device::Cpu, Some(5)),
        calc_loss_loader(&val_loader, &model, Device::Cpu, Some(5)),
    ];
    let close = |name: &str, ours: &[f64], theirs: &[f64]| {
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(theirs) {
            assert!(
                (a - b).abs() < 1e-5,
                "{name}: ours {ours:?}, PyTorch {theirs:?}"
            );
        }
    };
    close(
        "initial losses",
        &initial,
        &common::floats(&run["initial_losses"]),
    );
    tch::manual_seed(123);
    let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 5e-4, 0.1);
    let start_context = format_input(&split.val_data[0]);
    let opts = TrainOptions {
        num_epochs: 2,
        eval_freq: 2,
        eval_iter: 2,
        start_context: &start_context,
        sample_tokens: 50,
        quiet: true,
        ..TrainOptions::default()
    };
    let history = train_model_simple(
        &model,
        &train_loader,
        &val_loader,
        &mut optimizer,
        tokenizer,
        &opts,
    )
    .unwrap();
    close(
        "train losses",
        &history.train_losses,
        &common::floats(&run["train_losses"]),
    );
    close(
        "val losses",
        &history.val_losses,
        &common::floats(&run["val_losses"]),
    );
    assert_eq!(
        serde_json::json!(history.track_tokens_seen),
        run["tokens_seen"]
    );
    assert_eq!(serde_json::json!(history.samples), run["samples"]);
}
