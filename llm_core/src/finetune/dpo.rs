//! Preference tuning with Direct Preference Optimization (the book's bonus
//! `ch07/04_preference-tuning-with-dpo`).
//!
//! After instruction fine-tuning, a preference data set gives two answers
//! for each instruction, one `chosen` (better) and one `rejected`. DPO
//! pushes the model (the *policy*) to make the chosen answer more likely
//! and the rejected one less likely, measured against a frozen copy of the
//! starting model (the *reference*) so that it does not drift far:
//!
//! ```text
//! loss = −log σ(β · [(log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected))])
//! ```
//!
//! where `log π(·)` is the mean log-probability of the answer's tokens
//! ([`compute_logprobs`]). The two bracketed differences are the *rewards*
//! of the chosen and the rejected answer; their difference, the *reward
//! margin*, grows as training works. At the start policy and reference are
//! the same model, so the loss is `log 2 ≈ 0.693`.
//!
//! | step | here |
//! |---|---|
//! | data: load, split 85/10/5 | [`load_preference_data`], [`crate::finetune::instruct::split_data`] |
//! | tokenize prompt, chosen, rejected | [`PreferenceDataset`] |
//! | pad, masks (padding and, by default, the prompt) | [`custom_collate_fn`], [`PreferenceLoader`] |
//! | the loss | [`compute_logprobs`], [`compute_dpo_loss`], [`compute_dpo_loss_batch`], [`compute_dpo_loss_loader`], [`evaluate_dpo_loss_loader`] |
//! | training | [`train_model_dpo_simple`]; [`train_model_dpo`] with checkpoints and resume |

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use crate::files::io_err;
use crate::finetune::instruct::{
    format_input, location, InstructionDataError, InstructionEntry, PAD_TOKEN_ID,
};
use crate::model::gpt::GptModel;
use crate::progress::Progress;
use crate::text::loader::BatchSampler;
use crate::text::tokenizer::{Tokenizer, TokenizerError};
use crate::train::checkpoint::save_training_checkpoint;
use crate::train::optim::AdamW;
pub use crate::train::pretrain::Checkpointing;

/// One preference example: an instruction (with optional input), the
/// reference output, and two answers, one preferred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceEntry {
    pub instruction: String,
    /// Empty when the instruction needs no input.
    pub input: String,
    pub output: String,
    /// The better answer.
    pub chosen: String,
    /// The worse answer.
    pub rejected: String,
}

impl PreferenceEntry {
    /// The entry as chapter 7's instruction entry (for its prompt format).
    pub fn instruction_entry(&self) -> InstructionEntry {
        InstructionEntry::new(&self.instruction, &self.input, &self.output)
    }
}

impl fmt::Display for PreferenceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "instruction: {:?}", self.instruction)?;
        writeln!(f, "input:       {:?}", self.input)?;
        writeln!(f, "output:      {:?}", self.output)?;
        writeln!(f, "chosen:      {:?}", self.chosen)?;
        write!(f, "rejected:    {:?}", self.rejected)
    }
}

/// Parse preference data: a JSON array of objects with the string fields
/// `instruction`, `input`, `output`, `chosen` and `rejected`. Errors name
/// `path`, the entry and the field.
///
/// ```
/// use llm_core::finetune::dpo::parse_preference_data;
///
/// let bad = r#"[{"instruction": "Say hi.", "input": "", "output": "Hi!", "chosen": "Hi!"}]"#;
/// let err = parse_preference_data(bad, "prefs.json").unwrap_err().to_string();
/// assert!(err.starts_with("prefs.json: entry 0: missing field `rejected`"), "{err}");
/// ```
pub fn parse_preference_data(
    json: &str,
    path: impl AsRef<Path>,
) -> Result<Vec<PreferenceEntry>, InstructionDataError> {
    let path = path.as_ref().to_path_buf();
    let mut deserializer = serde_json::Deserializer::from_str(crate::data::strip_bom(json));
    let entries: Vec<PreferenceEntry> = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| InstructionDataError::Json {
            path: path.clone(),
            location: location(e.path()),
            source: e.into_inner(),
        })?;
    for (index, e) in entries.iter().enumerate() {
        for (field, value) in [
            ("instruction", &e.instruction),
            ("chosen", &e.chosen),
            ("rejected", &e.rejected),
        ] {
            if value.trim().is_empty() {
                return Err(InstructionDataError::Field {
                    path,
                    index,
                    field,
                    problem: "is empty".into(),
                });
            }
        }
    }
    Ok(entries)
}

/// Read and check a file of preference data (the book's
/// `instruction-data-with-preference.json`, 1,100 entries:
/// `llm_core::data::path("instruction-data-with-preference.json")`).
pub fn load_preference_data(
    path: impl AsRef<Path>,
) -> Result<Vec<PreferenceEntry>, InstructionDataError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_preference_data(&text, path)
}

/// One tokenized example: the prompt alone, and prompt plus each answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPreference {
    pub prompt: Vec<i64>,
    pub chosen: Vec<i64>,
    pub rejected: Vec<i64>,
}

/// The book's `PreferenceDataset`: every entry tokenized once, the prompt
/// in chapter 7's Alpaca format and each answer after `### Response:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceDataset {
    pub data: Vec<PreferenceEntry>,
    pub encoded_texts: Vec<EncodedPreference>,
}

impl PreferenceDataset {
    /// Tokenize `data` with `tokenizer`.
    pub fn new<T: Tokenizer + ?Sized>(
        data: &[PreferenceEntry],
        tokenizer: &T,
    ) -> Result<Self, TokenizerError> {
        let ids = |text: &str| -> Result<Vec<i64>, TokenizerError> {
            Ok(tokenizer.encode(text)?.into_iter().map(i64::from).collect())
        };
        let encoded_texts = data
            .iter()
            .map(|entry| {
                let prompt = format_input(&entry.instruction_entry());
                Ok(EncodedPreference {
                    prompt: ids(&prompt)?,
                    chosen: ids(&format!("{prompt}\n\n### Response:\n{}", entry.chosen))?,
                    rejected: ids(&format!("{prompt}\n\n### Response:\n{}", entry.rejected))?,
                })
            })
            .collect::<Result<_, TokenizerError>>()?;
        Ok(PreferenceDataset {
            data: data.to_vec(),
            encoded_texts,
        })
    }

    pub fn len(&self) -> usize {
        self.encoded_texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encoded_texts.is_empty()
    }

    /// A loader over the data set (the book's `DataLoader(dataset,
    /// batch_size, collate_fn, shuffle, drop_last)`).
    pub fn into_loader(
        self,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
        collate: PreferenceCollate,
    ) -> PreferenceLoader {
        PreferenceLoader {
            sampler: BatchSampler::new(self.len(), batch_size)
                .shuffle(shuffle)
                .drop_last(drop_last),
            dataset: self,
            collate,
        }
    }
}

/// The keyword arguments of the book's preference `custom_collate_fn`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreferenceCollate {
    /// Pads the sequences (50256).
    pub pad_token_id: i64,
    /// Cut the sequences and masks to this many tokens (the book: 1024).
    pub allowed_max_length: Option<usize>,
    /// Leave the prompt (and the two newlines after it) out of the masks,
    /// so only the answers count (the book's default).
    pub mask_prompt_tokens: bool,
    pub device: Device,
}

impl Default for PreferenceCollate {
    fn default() -> Self {
        PreferenceCollate {
            pad_token_id: PAD_TOKEN_ID,
            allowed_max_length: None,
            mask_prompt_tokens: true,
            device: Device::Cpu,
        }
    }
}

/// A collated batch: `chosen` and `rejected` padded to one common length,
/// with masks that are true on the tokens whose log-probabilities count.
#[derive(Debug)]
pub struct PreferenceBatch {
    /// Each prompt's ids (not padded).
    pub prompt: Vec<Tensor>,
    /// `[batch, length]` int64.
    pub chosen: Tensor,
    pub rejected: Tensor,
    /// `[batch, length]` bool.
    pub chosen_mask: Tensor,
    pub rejected_mask: Tensor,
}

/// The book's preference `custom_collate_fn`: pad every chosen and
/// rejected sequence with `pad_token_id` to the longest of them plus one;
/// masks false on the padding and (with `mask_prompt_tokens`) on the prompt
/// and the two newline tokens after it; everything cut to
/// `allowed_max_length`.
///
/// ```
/// use llm_core::finetune::dpo::{custom_collate_fn, EncodedPreference, PreferenceCollate};
///
/// let item = EncodedPreference { prompt: vec![1, 2], chosen: vec![1, 2, 9, 9, 7], rejected: vec![1, 2, 9, 9, 8, 8] };
/// let batch = custom_collate_fn(&[&item], &PreferenceCollate::default());
/// assert_eq!(Vec::<i64>::try_from(batch.chosen.get(0))?, [1, 2, 9, 9, 7, 50256, 50256]);
/// // prompt (2) + two newline tokens masked; padding masked
/// assert_eq!(Vec::<bool>::try_from(batch.chosen_mask.get(0))?, [false, false, false, false, true, false, false]);
/// assert_eq!(Vec::<bool>::try_from(batch.rejected_mask.get(0))?, [false, false, false, false, true, true, false]);
/// # Ok::<(), llm_core::tch::TchError>(())
/// ```
pub fn custom_collate_fn(
    batch: &[&EncodedPreference],
    opts: &PreferenceCollate,
) -> PreferenceBatch {
    let max_length_common = batch
        .iter()
        .flat_map(|item| [item.chosen.len() + 1, item.rejected.len() + 1])
        .max()
        .unwrap_or(0);
    let keep = opts
        .allowed_max_length
        .map_or(max_length_common, |a| a.min(max_length_common));
    let mut seqs: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    let mut masks: [Vec<bool>; 2] = [Vec::new(), Vec::new()];
    for item in batch {
        for (k, sequence) in [&item.chosen, &item.rejected].into_iter().enumerate() {
            let mut padded = sequence.clone();
            padded.resize(max_length_common, opts.pad_token_id);
            let mut mask: Vec<bool> = (0..max_length_common).map(|i| i < sequence.len()).collect();
            if opts.mask_prompt_tokens {
                let n = (item.prompt.len() + 2).min(max_length_common);
                mask[..n].fill(false);
            }
            seqs[k].extend_from_slice(&padded[..keep]);
            masks[k].extend_from_slice(&mask[..keep]);
        }
    }
    let shape = [batch.len() as i64, keep as i64];
    let ids = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(opts.device);
    let mask = |v: &[bool]| Tensor::from_slice(v).view(shape).to_device(opts.device);
    PreferenceBatch {
        prompt: batch
            .iter()
            .map(|item| Tensor::from_slice(&item.prompt))
            .collect(),
        chosen: ids(&seqs[0]),
        rejected: ids(&seqs[1]),
        chosen_mask: mask(&masks[0]),
        rejected_mask: mask(&masks[1]),
    }
}

/// Batches of a [`PreferenceDataset`], drawn as PyTorch's `DataLoader`
/// draws them (so a seeded run sees the book's batches).
#[derive(Debug, Clone)]
pub struct PreferenceLoader {
    pub dataset: PreferenceDataset,
    pub sampler: BatchSampler,
    pub collate: PreferenceCollate,
}

impl PreferenceLoader {
    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.sampler.num_batches()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One epoch's batches (a new shuffle, as a `for` loop over the
    /// book's `DataLoader` draws one).
    pub fn epoch(&self) -> Vec<PreferenceBatch> {
        self.sampler
            .epoch()
            .into_iter()
            .map(|idx| {
                let items: Vec<&EncodedPreference> = idx
                    .iter()
                    .map(|&i| &self.dataset.encoded_texts[i])
                    .collect();
                custom_collate_fn(&items, &self.collate)
            })
            .collect()
    }
}

/// The book's `compute_logprobs`: the log-probability the model gives each
/// next token of `labels` (`[batch, tokens]`) from `logits` (`[batch,
/// tokens, vocab]`), averaged over the positions `selection_mask` keeps
/// (all when `None`). Returns `[batch]`.
pub fn compute_logprobs(
    logits: &Tensor,
    labels: &Tensor,
    selection_mask: Option<&Tensor>,
) -> Tensor {
    let n = labels.size()[1];
    let labels = labels.narrow(1, 1, n - 1);
    let logits = logits.narrow(1, 0, n - 1);
    let log_probs = logits.log_softmax(-1, Kind::Float);
    let selected = log_probs
        .gather(-1, &labels.unsqueeze(-1), false)
        .squeeze_dim(-1);
    match selection_mask {
        Some(mask) => {
            let mask = mask.narrow(1, 1, n - 1).to_kind(Kind::Float);
            (selected * &mask).sum_dim_intlist(-1, false, Kind::Float)
                / mask.sum_dim_intlist(-1, false, Kind::Float)
        }
        None => selected.mean_dim(-1, false, Kind::Float),
    }
}

/// The book's `compute_dpo_loss` (eq. 7 of the DPO paper): from the
/// policy's and the reference's log-probabilities of the chosen and the
/// rejected answers (each `[batch]`), the mean loss and the mean chosen and
/// rejected rewards (detached).
///
/// ```
/// use llm_core::finetune::dpo::compute_dpo_loss;
/// use llm_core::tch::Tensor;
///
/// // policy = reference: loss log 2, rewards 0
/// let lp = Tensor::from_slice(&[-1.0f32, -2.0]);
/// let (loss, chosen, rejected) = compute_dpo_loss(&lp, &(&lp - 1.0), &lp, &(&lp - 1.0), 0.1);
/// assert!((loss.double_value(&[]) - 2f64.ln()).abs() < 1e-6);
/// assert_eq!((chosen.double_value(&[]), rejected.double_value(&[])), (0.0, 0.0));
/// ```
pub fn compute_dpo_loss(
    model_chosen_logprobs: &Tensor,
    model_rejected_logprobs: &Tensor,
    reference_chosen_logprobs: &Tensor,
    reference_rejected_logprobs: &Tensor,
    beta: f64,
) -> (Tensor, Tensor, Tensor) {
    let model_logratios = model_chosen_logprobs - model_rejected_logprobs;
    let reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs;
    let logits = model_logratios - reference_logratios;
    let losses = -(logits * beta).log_sigmoid();
    let chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach();
    let rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach();
    (
        losses.mean(Kind::Float),
        chosen_rewards.mean(Kind::Float),
        rejected_rewards.mean(Kind::Float),
    )
}

/// The book's `compute_dpo_loss_batch`: the DPO loss of one batch; the
/// policy runs in training mode when `train` (gradients flow), the
/// reference always in evaluation mode without gradients.
pub fn compute_dpo_loss_batch<P: ModuleT + ?Sized, R: ModuleT + ?Sized>(
    batch: &PreferenceBatch,
    policy_model: &P,
    reference_model: &R,
    beta: f64,
    train: bool,
) -> (Tensor, Tensor, Tensor) {
    let policy_chosen = compute_logprobs(
        &policy_model.forward_t(&batch.chosen, train),
        &batch.chosen,
        Some(&batch.chosen_mask),
    );
    let policy_rejected = compute_logprobs(
        &policy_model.forward_t(&batch.rejected, train),
        &batch.rejected,
        Some(&batch.rejected_mask),
    );
    let (ref_chosen, ref_rejected) = tch::no_grad(|| {
        (
            compute_logprobs(
                &reference_model.forward_t(&batch.chosen, false),
                &batch.chosen,
                Some(&batch.chosen_mask),
            ),
            compute_logprobs(
                &reference_model.forward_t(&batch.rejected, false),
                &batch.rejected,
                Some(&batch.rejected_mask),
            ),
        )
    });
    compute_dpo_loss(
        &policy_chosen,
        &policy_rejected,
        &ref_chosen,
        &ref_rejected,
        beta,
    )
}

/// Mean DPO loss and rewards over batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoLosses {
    pub loss: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
}

impl DpoLosses {
    /// Chosen minus rejected reward.
    pub fn reward_margin(&self) -> f64 {
        self.chosen_reward - self.rejected_reward
    }
}

/// The book's `compute_dpo_loss_loader`: the mean over the first
/// `num_batches` batches of an epoch of `loader` (all when `None`), without
/// gradients, the policy in evaluation mode. NaN when the loader is empty.
pub fn compute_dpo_loss_loader<P: ModuleT + ?Sized, R: ModuleT + ?Sized>(
    loader: &PreferenceLoader,
    policy_model: &P,
    reference_model: &R,
    beta: f64,
    num_batches: Option<usize>,
) -> DpoLosses {
    if loader.is_empty() {
        return DpoLosses {
            loss: f64::NAN,
            chosen_reward: f64::NAN,
            rejected_reward: f64::NAN,
        };
    }
    let n = num_batches.map_or(loader.len(), |n| n.min(loader.len()));
    let (mut loss, mut chosen, mut rejected) = (0.0, 0.0, 0.0);
    tch::no_grad(|| {
        for batch in loader.epoch().iter().take(n) {
            let (l, c, r) =
                compute_dpo_loss_batch(batch, policy_model, reference_model, beta, false);
            loss += l.double_value(&[]);
            chosen += c.double_value(&[]);
            rejected += r.double_value(&[]);
        }
    });
    let n = n as f64;
    DpoLosses {
        loss: loss / n,
        chosen_reward: chosen / n,
        rejected_reward: rejected / n,
    }
}

/// The book's `evaluate_dpo_loss_loader`: losses and rewards on the first
/// `eval_iter` batches of the training and the validation loader.
pub fn evaluate_dpo_loss_loader<P: ModuleT + ?Sized, R: ModuleT + ?Sized>(
    policy_model: &P,
    reference_model: &R,
    train_loader: &PreferenceLoader,
    val_loader: &PreferenceLoader,
    beta: f64,
    eval_iter: usize,
) -> (DpoLosses, DpoLosses) {
    (
        compute_dpo_loss_loader(
            train_loader,
            policy_model,
            reference_model,
            beta,
            Some(eval_iter),
        ),
        compute_dpo_loss_loader(
            val_loader,
            policy_model,
            reference_model,
            beta,
            Some(eval_iter),
        ),
    )
}

/// What [`train_model_dpo_simple`] records at each evaluation (the book's
/// `tracking` dictionary), and where a run stands (for checkpoints).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DpoHistory {
    pub train_losses: Vec<f64>,
    pub train_chosen_rewards: Vec<f64>,
    pub train_rejected_rewards: Vec<f64>,
    pub val_losses: Vec<f64>,
    pub val_chosen_rewards: Vec<f64>,
    pub val_rejected_rewards: Vec<f64>,
    pub tokens_seen: Vec<i64>,
    /// The global step of each evaluation.
    pub steps: Vec<usize>,
    /// Epochs completed.
    #[serde(default)]
    pub epochs_done: usize,
    /// Optimizer steps taken.
    #[serde(default)]
    pub global_step: usize,
    /// Tokens of the chosen sequences seen so far.
    #[serde(default)]
    pub tokens_seen_total: i64,
}

impl DpoHistory {
    /// Train reward margins (chosen minus rejected), one per evaluation.
    pub fn train_reward_margins(&self) -> Vec<f64> {
        self.train_chosen_rewards
            .iter()
            .zip(&self.train_rejected_rewards)
            .map(|(c, r)| c - r)
            .collect()
    }

    /// Validation reward margins, one per evaluation.
    pub fn val_reward_margins(&self) -> Vec<f64> {
        self.val_chosen_rewards
            .iter()
            .zip(&self.val_rejected_rewards)
            .map(|(c, r)| c - r)
            .collect()
    }
}

/// The settings of [`train_model_dpo_simple`] (the book's arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoOptions {
    pub num_epochs: usize,
    pub beta: f64,
    /// Evaluate every `eval_freq` steps (and at step 0).
    pub eval_freq: usize,
    /// Batches per evaluation.
    pub eval_iter: usize,
}

/// What stops DPO training.
#[derive(Debug, thiserror::Error)]
pub enum DpoError {
    /// A training loss that is NaN or infinite.
    #[error("the DPO loss became {loss} at step {step}: lower the learning rate or beta")]
    Diverged { step: usize, loss: f64 },
    /// A checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] crate::files::FileError),
}

/// The book's `train_model_dpo_simple`: for each batch, the DPO loss of
/// the policy against the frozen reference, backward, an AdamW step; every
/// `eval_freq` steps the losses and rewards of [`evaluate_dpo_loss_loader`]
/// are recorded and printed on the progress line ("Ep 1 (Step 000005):
/// Train loss 0.683, Val loss 0.685, Train reward margins 0.120, Val reward
/// margins 0.093"). The reference never receives gradients.
pub fn train_model_dpo_simple<P: ModuleT + ?Sized, R: ModuleT + ?Sized>(
    policy_model: &P,
    reference_model: &R,
    train_loader: &PreferenceLoader,
    val_loader: &PreferenceLoader,
    optimizer: &mut AdamW,
    opts: &DpoOptions,
) -> Result<DpoHistory, DpoError> {
    run(
        policy_model,
        reference_model,
        train_loader,
        val_loader,
        optimizer,
        opts,
        DpoHistory::default(),
        |_, _| Ok(()),
    )
}

/// [`train_model_dpo_simple`] for a GPT policy, with a training checkpoint
/// (chapter 5's format: weights, AdamW state, generator state, and the
/// [`DpoHistory`]) written atomically into `checkpointing.dir` after every
/// epoch, and `resume`: the history of a checkpoint loaded with
/// [`crate::train::checkpoint::load_training_checkpoint_of`], from which
/// training continues exactly as if it had not stopped.
#[allow(clippy::too_many_arguments)]
pub fn train_model_dpo<R: ModuleT + ?Sized>(
    policy_model: &GptModel,
    reference_model: &R,
    train_loader: &PreferenceLoader,
    val_loader: &PreferenceLoader,
    optimizer: &mut AdamW,
    opts: &DpoOptions,
    checkpointing: Option<&Checkpointing>,
    resume: Option<DpoHistory>,
) -> Result<DpoHistory, DpoError> {
    let save = |history: &DpoHistory, optimizer: &AdamW| -> Result<(), crate::files::FileError> {
        match checkpointing {
            Some(c) => {
                save_training_checkpoint(&c.dir, c.vs, &policy_model.cfg, optimizer, history)
            }
            None => Ok(()),
        }
    };
    run(
        policy_model,
        reference_model,
        train_loader,
        val_loader,
        optimizer,
        opts,
        resume.unwrap_or_default(),
        save,
    )
}

#[allow(clippy::too_many_arguments)]
fn run<P: ModuleT + ?Sized, R: ModuleT + ?Sized>(
    policy_model: &P,
    reference_model: &R,
    train_loader: &PreferenceLoader,
    val_loader: &PreferenceLoader,
    optimizer: &mut AdamW,
    opts: &DpoOptions,
    mut history: DpoHistory,
    save: impl Fn(&DpoHistory, &AdamW) -> Result<(), crate::files::FileError>,
) -> Result<DpoHistory, DpoError> {
    let total = opts.num_epochs * train_loader.len();
    let mut progress = Progress::new("DPO", total);
    if history.global_step > 0 {
        progress.set_position(history.global_step);
    }
    for epoch in history.epochs_done..opts.num_epochs {
        for batch in train_loader.epoch() {
            let global_step = history.global_step;
            optimizer.zero_grad();
            let (loss, _, _) =
                compute_dpo_loss_batch(&batch, policy_model, reference_model, opts.beta, true);
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(DpoError::Diverged {
                    step: global_step,
                    loss: value,
                });
            }
            loss.backward();
            optimizer.step();
            history.tokens_seen_total += batch.chosen.numel() as i64;
            if global_step.is_multiple_of(opts.eval_freq.max(1)) {
                let (train, val) = evaluate_dpo_loss_loader(
                    policy_model,
                    reference_model,
                    train_loader,
                    val_loader,
                    opts.beta,
                    opts.eval_iter,
                );
                history.train_losses.push(train.loss);
                history.train_chosen_rewards.push(train.chosen_reward);
                history.train_rejected_rewards.push(train.rejected_reward);
                history.val_losses.push(val.loss);
                history.val_chosen_rewards.push(val.chosen_reward);
                history.val_rejected_rewards.push(val.rejected_reward);
                history.tokens_seen.push(history.tokens_seen_total);
                history.steps.push(global_step);
                progress.set("loss", train.loss);
                progress.println(&format!(
                    "Ep {} (Step {global_step:06}): Train loss {:.3}, Val loss {:.3}, Train reward margins {:.3}, Val reward margins {:.3}",
                    epoch + 1,
                    train.loss,
                    val.loss,
                    train.reward_margin(),
                    val.reward_margin()
                ));
            }
            history.global_step += 1;
            progress.add_tokens(batch.chosen.numel() as u64);
            progress.set_position(history.global_step);
        }
        history.epochs_done = epoch + 1;
        save(&history, optimizer)?;
    }
    progress.finish();
    Ok(history)
}

/// Where the preference data lives, by the data module's name.
pub fn preference_data_path() -> Result<PathBuf, crate::data::DataError> {
    crate::data::path("instruction-data-with-preference.json")
}
