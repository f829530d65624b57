//! Chapter 6.5–6.8: turning a GPT into a classifier — a new output head,
//! frozen lower layers, loss and accuracy on the last token, the training
//! loop and `classify_review`.
//!
//! | book (§) | here |
//! |---|---|
//! | 6.5 | [`prepare_for_classification`], [`Trainable`] |
//! | 6.6 | [`calc_loss_batch`], [`calc_loss_loader`], [`calc_accuracy_loader`] |
//! | 6.7 | [`train_classifier_simple`] with [`ClassifierOptions`], [`ClassifierHistory`] |
//! | 6.8 | [`classify_review`] |
//!
//! Why the **last** token: with causal attention only the last position has
//! seen every token of the message, so its output summarises the whole text.
//!
//! ```
//! use llm_core::finetune::classifier::{prepare_for_classification, Trainable};
//! use llm_core::model::gpt::{GptConfig, GptModel};
//! use llm_core::tch::{self, nn, Device};
//!
//! let cfg = GptConfig { vocab_size: 50, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 3,
//!                       ..GptConfig::gpt2_small() };
//! let vs = nn::VarStore::new(Device::Cpu);
//! let mut model = GptModel::new(vs.root(), &cfg)?;
//! tch::manual_seed(123);
//! let counts = prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock);
//! println!("{counts}");
//! assert_eq!(model.out_head.ws.size(), [2, 16]);
//! assert!(counts.trainable < counts.total);
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use crate::finetune::spam::PAD_TOKEN_ID;
use crate::model::gpt::GptModel;
use crate::model::linear::Linear;
use crate::progress::Progress;
use crate::text::loader::DataLoader;
use crate::text::tokenizer::{Tokenizer, TokenizerError};
use crate::train::optim::AdamW;

/// Which layers train during fine-tuning (the rest stay frozen). The book
/// trains the last transformer block, the final norm and the new head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trainable {
    /// The last transformer block, `final_norm` and the head (the book).
    LastBlock,
    /// The last two transformer blocks, `final_norm` and the head.
    LastTwoBlocks,
    /// Every parameter.
    All,
}

impl fmt::Display for Trainable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trainable::LastBlock => "last_block",
            Trainable::LastTwoBlocks => "last_two_blocks",
            Trainable::All => "all",
        })
    }
}

impl FromStr for Trainable {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "last_block" => Ok(Trainable::LastBlock),
            "last_two_blocks" => Ok(Trainable::LastTwoBlocks),
            "all" => Ok(Trainable::All),
            other => Err(format!(
                "{other:?} is not one of last_block, last_two_blocks, all"
            )),
        }
    }
}

/// Parameter counts after [`prepare_for_classification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCounts {
    pub total: i64,
    pub trainable: i64,
}

impl fmt::Display for ParameterCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} parameters trainable ({:.2} %)",
            self.trainable,
            self.total,
            100.0 * self.trainable as f64 / self.total.max(1) as f64
        )
    }
}

/// Count the model's parameters and those that require gradients.
pub fn count_parameters(model: &GptModel) -> ParameterCounts {
    let params = model.parameters();
    ParameterCounts {
        total: params.iter().map(|p| p.numel() as i64).sum(),
        trainable: params
            .iter()
            .filter(|p| p.requires_grad())
            .map(|p| p.numel() as i64)
            .sum(),
    }
}

/// The book's model surgery (§6.5): freeze every parameter, replace
/// `out_head` by a new `Linear(emb_dim, num_classes)` (with bias, PyTorch's
/// default initialisation, drawn now from libtorch's generator — seed before,
/// as the book does), then unfreeze what `trainable` says. As in the book's
/// `state_dict`, the new head's variables are `out_head.weight` /
/// `out_head.bias` in `vs`: the language-model head leaves the store.
pub fn prepare_for_classification(
    vs: &VarStore,
    model: &mut GptModel,
    num_classes: i64,
    trainable: Trainable,
) -> ParameterCounts {
    for p in model.parameters() {
        let _ = p.set_requires_grad(false);
    }
    // the language-model head leaves the store, so the new head takes its name
    crate::model::init::remove_variables(vs, &["out_head.weight".to_string()]);
    model.out_head = Linear::new(vs.root() / "out_head", model.cfg.emb_dim, num_classes, true);
    let n = model.trf_blocks.len();
    let blocks = match trainable {
        Trainable::LastBlock => n.saturating_sub(1)..n,
        Trainable::LastTwoBlocks => n.saturating_sub(2)..n,
        Trainable::All => 0..n,
    };
    let mut unfreeze: Vec<&Tensor> = model.trf_blocks[blocks]
        .iter()
        .flat_map(|b| b.parameters())
        .collect();
    unfreeze.extend(model.final_norm.parameters());
    if trainable == Trainable::All {
        unfreeze.extend([&model.tok_emb.ws, &model.pos_emb.ws]);
    }
    for p in unfreeze {
        let _ = p.set_requires_grad(true);
    }
    count_parameters(model)
}

/// The classifier's logits: the model's output at the **last** position,
/// `[batch, num_classes]`.
pub fn last_token_logits<M: ModuleT + ?Sized>(
    model: &M,
    input_batch: &Tensor,
    train: bool,
) -> Tensor {
    model.forward_t(input_batch, train).select(1, -1)
}

/// The book's chapter-6 `calc_loss_batch`: cross-entropy of the last-token
/// logits against the labels (`[batch]`).
pub fn calc_loss_batch<M: ModuleT + ?Sized>(
    input_batch: &Tensor,
    target_batch: &Tensor,
    model: &M,
    device: Device,
    train: bool,
) -> Tensor {
    let logits = last_token_logits(model, &input_batch.to_device(device), train);
    logits.cross_entropy_loss::<Tensor>(
        &target_batch.to_device(device),
        None,
        Reduction::Mean,
        crate::train::loss::IGNORE_INDEX,
        0.0,
    )
}

/// The mean of [`calc_loss_batch`] over the first `num_batches` batches
/// (all with `None`), without dropout or gradients; NaN for an empty loader.
pub fn calc_loss_loader<M: ModuleT + ?Sized, L: DataLoader + ?Sized>(
    data_loader: &L,
    model: &M,
    device: Device,
    num_batches: Option<usize>,
) -> f64 {
    crate::train::loss::mean_over_batches(data_loader, num_batches, |x, y| {
        calc_loss_batch(x, y, model, device, false).double_value(&[])
    })
}

/// The book's `calc_accuracy_loader`: the share of correctly classified
/// examples in the first `num_batches` batches (argmax of the last-token
/// logits against the labels), without dropout or gradients.
///
/// ```
/// use llm_core::finetune::classifier::calc_accuracy_loader;
/// use llm_core::text::loader::TensorLoader;
/// use llm_core::tch::{nn::Module, Device, Kind, Tensor};
///
/// // a "model" whose last-token logits favour class 1 exactly when the last id is odd
/// #[derive(Debug)]
/// struct Parity;
/// impl Module for Parity {
///     fn forward(&self, xs: &Tensor) -> Tensor {
///         let odd = xs.remainder(2).to_kind(Kind::Float).unsqueeze(-1);
///         Tensor::cat(&[1.0 - &odd, odd], -1)
///     }
/// }
/// let inputs = Tensor::from_slice2(&[[4i64, 1], [2, 2], [5, 3], [7, 8]]);
/// let labels = Tensor::from_slice(&[1i64, 0, 1, 1]); // the last one is wrong
/// let loader = TensorLoader::new(inputs, labels, 2);
/// assert_eq!(calc_accuracy_loader(&loader, &Parity, Device::Cpu, None), 0.75);
/// ```
pub fn calc_accuracy_loader<M: ModuleT + ?Sized, L: DataLoader + ?Sized>(
    data_loader: &L,
    model: &M,
    device: Device,
    num_batches: Option<usize>,
) -> f64 {
    let len = data_loader.num_batches();
    let n = num_batches.map_or(len, |k| k.min(len));
    let (mut correct, mut examples) = (0i64, 0i64);
    tch::no_grad(|| {
        for (x, y) in data_loader.batches().into_iter().take(n) {
            let predicted = last_token_logits(model, &x.to_device(device), false).argmax(-1, false);
            examples += predicted.size()[0];
            correct += predicted
                .eq_tensor(&y.to_device(device))
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
    });
    correct as f64 / examples.max(1) as f64
}

/// What [`train_classifier_simple`] records (the book returns the same five
/// values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassifierHistory {
    /// One entry per evaluation (every `eval_freq` steps).
    pub train_losses: Vec<f64>,
    pub val_losses: Vec<f64>,
    /// Examples seen at each evaluation.
    pub track_examples_seen: Vec<i64>,
    /// One entry per epoch, over `eval_iter` batches.
    pub train_accs: Vec<f64>,
    pub val_accs: Vec<f64>,
    /// Examples trained on in total.
    pub examples_seen: i64,
    pub train_seconds: f64,
}

/// Why fine-tuning stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("the training loss became {loss} at epoch {epoch}, step {global_step}; training stopped (lower the learning rate)")]
    NonFinite {
        loss: f64,
        epoch: usize,
        global_step: i64,
    },
    #[error("the training loader has no batches")]
    EmptyLoader,
    /// A setting outside its range (checked before the first step).
    #[error("{0}")]
    Setting(String),
}

/// The knobs of [`train_classifier_simple`] (the book's keyword arguments).
#[derive(Debug, Clone, Copy)]
pub struct ClassifierOptions {
    /// Epochs to train (book: 5).
    pub num_epochs: usize,
    /// Evaluate the losses every `eval_freq` steps (book: 50).
    pub eval_freq: usize,
    /// Batches per loader in each evaluation and accuracy (book: 5).
    pub eval_iter: usize,
    /// Where the batches go (`Device::Cpu` or a GPU).
    pub device: Device,
    /// No progress line and no printed evaluations.
    pub quiet: bool,
}

impl Default for ClassifierOptions {
    /// The book's settings (§6.7): 5 epochs, `eval_freq` 50, `eval_iter` 5.
    fn default() -> Self {
        ClassifierOptions {
            num_epochs: 5,
            eval_freq: 50,
            eval_iter: 5,
            device: Device::Cpu,
            quiet: false,
        }
    }
}

/// The book's `train_classifier_simple` (§6.7): AdamW on the trainable
/// parameters, loss on the last token, evaluation every `eval_freq` steps
/// over `eval_iter` batches, training and validation accuracy after each
/// epoch. Prints the book's lines under a progress line (unless `quiet`).
pub fn train_classifier_simple<T: DataLoader + ?Sized, V: DataLoader + ?Sized>(
    model: &GptModel,
    train_loader: &T,
    val_loader: &V,
    optimizer: &mut AdamW,
    opts: &ClassifierOptions,
) -> Result<ClassifierHistory, ClassifierError> {
    let ClassifierOptions {
        num_epochs,
        eval_freq,
        eval_iter,
        device,
        quiet,
    } = *opts;
    if num_epochs == 0 || eval_freq == 0 || eval_iter == 0 {
        return Err(ClassifierError::Setting(format!(
            "num_epochs = {num_epochs}, eval_freq = {eval_freq}, eval_iter = {eval_iter}: each must be 1 or more"
        )));
    }
    let steps = train_loader.num_batches();
    if steps == 0 {
        return Err(ClassifierError::EmptyLoader);
    }
    let mut history = ClassifierHistory::default();
    let mut global_step: i64 = -1;
    let mut bar = Progress::new("fine-tuning", steps * num_epochs);
    if quiet {
        bar = bar.quiet();
    }
    let started = std::time::Instant::now();
    for epoch in 0..num_epochs {
        for (input_batch, target_batch) in train_loader.batches() {
            optimizer.zero_grad();
            let loss = calc_loss_batch(&input_batch, &target_batch, model, device, true);
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                bar.finish();
                return Err(ClassifierError::NonFinite {
                    loss: value,
                    epoch: epoch + 1,
                    global_step: global_step + 1,
                });
            }
            loss.backward();
            optimizer.step();
            history.examples_seen += input_batch.size()[0];
            global_step += 1;
            if global_step % eval_freq as i64 == 0 {
                let train_loss = calc_loss_loader(train_loader, model, device, Some(eval_iter));
                let val_loss = calc_loss_loader(val_loader, model, device, Some(eval_iter));
                history.train_losses.push(train_loss);
                history.val_losses.push(val_loss);
                history.track_examples_seen.push(history.examples_seen);
                bar.println(&format!(
                    "Ep {} (Step {global_step:06}): Train loss {train_loss:.3}, Val loss {val_loss:.3}",
                    epoch + 1
                ));
            }
            bar.set("loss", value);
            bar.inc(1);
        }
        let train_accuracy = calc_accuracy_loader(train_loader, model, device, Some(eval_iter));
        let val_accuracy = calc_accuracy_loader(val_loader, model, device, Some(eval_iter));
        bar.println(&format!(
            "Training accuracy: {:.2}% | Validation accuracy: {:.2}%",
            train_accuracy * 100.0,
            val_accuracy * 100.0
        ));
        history.train_accs.push(train_accuracy);
        history.val_accs.push(val_accuracy);
    }
    bar.finish();
    history.train_seconds = started.elapsed().as_secs_f64();
    Ok(history)
}

/// The book's `classify_review` (§6.8): tokenize `text`, cut it to
/// `max_length` (and the model's context), pad with [`PAD_TOKEN_ID`] to `max_length`,
/// and return `"spam"` or `"not spam"` from the last token's logits.
pub fn classify_review<T: Tokenizer + ?Sized>(
    text: &str,
    model: &GptModel,
    tokenizer: &T,
    device: Device,
    max_length: usize,
) -> Result<&'static str, TokenizerError> {
    let mut ids: Vec<i64> = tokenizer.encode(text)?.into_iter().map(i64::from).collect();
    let keep = max_length.min(model.cfg.context_length as usize);
    ids.truncate(keep);
    ids.resize(keep, PAD_TOKEN_ID as i64);
    let input = Tensor::from_slice(&ids).unsqueeze(0).to_device(device);
    let logits = tch::no_grad(|| last_token_logits(model, &input, false));
    let predicted = logits.argmax(-1, false).int64_value(&[0]);
    Ok(if predicted == 1 { "spam" } else { "not spam" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gpt::GptConfig;
    use crate::train::optim::named_parameters;
    use tch::nn;

    fn tiny(n_layers: i64) -> (nn::VarStore, GptModel) {
        let cfg = GptConfig {
            vocab_size: 60,
            context_length: 8,
            emb_dim: 16,
            n_heads: 2,
            n_layers,
            drop_rate: 0.0,
            qkv_bias: false,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = GptModel::new(vs.root(), &cfg).unwrap();
        (vs, model)
    }

    #[test]
    fn the_new_head_is_saved_as_out_head_as_in_the_book() {
        let _rng = crate::rng_lock();
        let (vs, mut model) = tiny(1);
        prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock);
        let vars = vs.variables();
        assert_eq!(vars["out_head.weight"].size(), [2, 16]);
        assert_eq!(vars["out_head.bias"].size(), [2]);
        assert!(vars.keys().all(|k| !k.contains("cls_head")));
        let in_store: i64 = vars.values().map(|t| t.numel() as i64).sum();
        assert_eq!(in_store, count_parameters(&model).total);
    }

    #[test]
    fn last_token_selection() {
        let _lock = crate::rng_lock();
        tch::manual_seed(1);
        let (vs, mut model) = tiny(2);
        prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock);
        let x = Tensor::from_slice2(&[[1i64, 2, 3, 4], [5, 6, 7, 8]]);
        let full = tch::no_grad(|| model.forward_t(&x, false));
        let last = tch::no_grad(|| last_token_logits(&model, &x, false));
        assert_eq!(last.size(), [2, 2]);
        assert!(last.equal(&full.select(1, 3)));
        // causal: the last position depends on every token, earlier ones do not see later tokens
        let changed = Tensor::from_slice2(&[[9i64, 2, 3, 4], [5, 6, 7, 8]]);
        let last2 = tch::no_grad(|| last_token_logits(&model, &changed, false));
        assert!(!last2.get(0).equal(&last.get(0)));
    }

    #[test]
    fn frozen_parameters_stay_unchanged_after_a_step() {
        let _lock = crate::rng_lock();
        tch::manual_seed(2);
        let (vs, mut model) = tiny(3);
        let counts = prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock);
        let block = &model.trf_blocks;
        let expected: i64 = block[2]
            .parameters()
            .iter()
            .map(|p| p.numel() as i64)
            .sum::<i64>()
            + 2 * 16
            + (16 * 2 + 2);
        assert_eq!(counts.trainable, expected);
        let before: Vec<Tensor> = model.parameters().iter().map(|p| p.copy()).collect();
        let flags: Vec<bool> = model
            .parameters()
            .iter()
            .map(|p| p.requires_grad())
            .collect();
        let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-2, 0.1);
        let x = Tensor::from_slice2(&[[1i64, 2, 3], [4, 5, 6]]);
        let y = Tensor::from_slice(&[0i64, 1]);
        optimizer.zero_grad();
        calc_loss_batch(&x, &y, &model, Device::Cpu, true).backward();
        optimizer.step();
        for ((p, b), trainable) in model.parameters().iter().zip(&before).zip(flags) {
            assert_eq!(
                p.equal(b),
                !trainable,
                "a {} parameter",
                if trainable { "trainable" } else { "frozen" }
            );
        }
    }

    #[test]
    fn trainable_settings() {
        let _lock = crate::rng_lock();
        let (vs, mut model) = tiny(3);
        let last = prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock);
        let (vs2, mut model2) = tiny(3);
        let two = prepare_for_classification(&vs2, &mut model2, 2, Trainable::LastTwoBlocks);
        let (vs3, mut model3) = tiny(3);
        let all = prepare_for_classification(&vs3, &mut model3, 2, Trainable::All);
        assert!(last.trainable < two.trainable && two.trainable < all.trainable);
        assert_eq!(all.trainable, all.total);
        assert_eq!(
            "last_two_blocks".parse::<Trainable>(),
            Ok(Trainable::LastTwoBlocks)
        );
        assert!("some"
            .parse::<Trainable>()
            .unwrap_err()
            .contains("last_block"));
    }

    #[test]
    fn classify_review_pads_to_max_length() {
        let _lock = crate::rng_lock();
        tch::manual_seed(3);
        let (vs, mut model) = tiny(1);
        prepare_for_classification(&vs, &mut model, 2, Trainable::LastBlock);
        let tokenizer = crate::text::tokenizer::SimpleTokenizerV1::from_text("win cash now hi");
        // the vocabulary has 4 tokens; pad id 50256 is outside the tiny model's vocabulary,
        // so pass a max_length equal to the text length (no padding needed)
        let label = classify_review("win cash now", &model, &tokenizer, Device::Cpu, 3).unwrap();
        assert!(label == "spam" || label == "not spam");
    }
}
