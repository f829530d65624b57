//! Chapter 5.2 and appendix D: the training loop.
//!
//! | book (§) | here |
//! |---|---|
//! | 5.2 | [`train_model_simple`] (its step: [`train_step`]), [`evaluate_model`], [`generate_sample`] |
//! | D.1–D.3 | [`LrSchedule`] (linear warm-up, cosine decay), gradient clipping ([`crate::train::optim::clip_grad_norm`]) |
//! | D.4 | [`train_model`] |
//!
//! Both loops make the book's calls in the book's order — zero the
//! gradients, loss, backward, (clip,) AdamW step, evaluate every `eval_freq`
//! steps on the first `eval_iter` batches, a greedy sample after each epoch —
//! so a run seeded as in the book draws the same dropout masks and batches
//! as the book's PyTorch code on the same libtorch.
//!
//! On top of the book: a progress line (step, loss, learning rate, tokens/s,
//! time left); a NaN or infinite loss stops the run with an error naming
//! the epoch and step; with [`TrainOptions::checkpoint`] a crash-safe
//! checkpoint after every epoch; with [`TrainOptions::resume`] the run goes
//! on from such a checkpoint exactly as if it had never stopped.
//!
//! ```
//! use llm_core::text::dataset::GptDatasetV1;
//! use llm_core::model::gpt::{GptConfig, GptModel};
//! use llm_core::train::optim::{named_parameters, AdamW};
//! use llm_core::text::tokenizer::SimpleTokenizerV1;
//! use llm_core::train::pretrain::{train_model_simple, TrainOptions};
//! use llm_core::tch::{self, nn, Device};
//!
//! let text = "the cat sat on the mat and the dog sat on the log ".repeat(8);
//! let tokenizer = SimpleTokenizerV1::from_text(&text);
//! let ids = llm_core::text::tokenizer::Tokenizer::encode(&tokenizer, &text)?;
//! let cfg = GptConfig { vocab_size: 10, context_length: 8, emb_dim: 16, n_heads: 2, n_layers: 1,
//!                       drop_rate: 0.0, qkv_bias: false };
//! tch::manual_seed(123);
//! let train_loader = GptDatasetV1::from_ids(&ids, 8, 8)?.into_loader(2, true, true);
//! let val_loader = GptDatasetV1::from_ids(&ids[..20], 8, 8)?.into_loader(2, false, false);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = GptModel::new(vs.root(), &cfg)?;
//! let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-2, 0.1);
//! let opts = TrainOptions { num_epochs: 5, eval_freq: 5, eval_iter: 1, start_context: "the cat",
//!                           sample_tokens: 4, quiet: true, ..TrainOptions::default() };
//! let history = train_model_simple(&model, &train_loader, &val_loader, &mut optimizer, &tokenizer, &opts)?;
//! assert!(history.train_losses.last().unwrap() < history.train_losses.first().unwrap());
//! assert_eq!(history.samples.len(), 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::f64::consts::PI;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::files::FileError;
use crate::model::generate::{text_to_token_ids, token_ids_to_text};
use crate::model::gpt::{generate_text_simple, GptModel};
use crate::progress::Progress;
use crate::rng::RngState;
use crate::text::loader::DataLoader;
use crate::text::tokenizer::{Tokenizer, TokenizerError};
use crate::train::checkpoint;
pub use crate::train::history::TrainHistory;
use crate::train::loss::{calc_loss_batch, calc_loss_loader};
use crate::train::optim::{clip_grad_norm, AdamW};

/// Why a training run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss of a batch was NaN or infinite: training has diverged.
    #[error("the training loss became {loss} at epoch {epoch}, step {step} (global step {global_step}); training stopped. Lower the learning rate (it was {lr:.3e}), or use warm-up and gradient clipping (train_model)")]
    NonFinite {
        loss: f64,
        epoch: usize,
        step: usize,
        global_step: i64,
        lr: f64,
    },
    /// A setting outside its range (checked before the first step).
    #[error("{name} = {value} is out of range; accepted: {accepted}")]
    Setting {
        name: &'static str,
        value: String,
        accepted: String,
    },
    /// The training loader has no batches (too little text for one batch).
    #[error("the training loader has no batches: the text is shorter than one batch of batch_size x (context_length + 1) tokens")]
    EmptyLoader,
    /// The run was stopped ([`TrainOptions::stop`], such as Ctrl-C, or
    /// [`TrainOptions::stop_at_step`]) after a whole step; with
    /// [`TrainOptions::checkpoint`] a checkpoint of that step was saved first.
    #[error("training stopped after global step {global_step}{}", match saved { Some(d) => format!("; checkpoint saved in {}", d.display()), None => "; no checkpoint (no checkpoint directory was given)".to_string() })]
    Stopped {
        global_step: i64,
        saved: Option<PathBuf>,
        /// What the run recorded up to the stop.
        history: Box<TrainHistory>,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Checkpoint(#[from] FileError),
    /// A collective of data-parallel training failed (a rank died or hung).
    #[error(transparent)]
    Distributed(#[from] crate::distributed::DistError),
}

/// Called after every evaluation with the history so far (its last
/// entries are the new evaluation): to log metrics or redraw a plot while
/// a long run goes on.
pub type EvalHook<'a> = &'a dyn Fn(&TrainHistory);

/// Where to save a checkpoint after every epoch.
#[derive(Debug)]
pub struct Checkpointing<'a> {
    /// The store holding the model's weights.
    pub vs: &'a VarStore,
    /// The checkpoint directory (replaced as a whole after each epoch).
    pub dir: PathBuf,
}

/// The knobs of the training loops (the book's keyword arguments).
pub struct TrainOptions<'a> {
    /// Epochs to train in total (a resumed run counts the epochs already done).
    pub num_epochs: usize,
    /// Evaluate every `eval_freq` steps (book: 5).
    pub eval_freq: usize,
    /// Batches per loader in each evaluation (book: 5; appendix D: 1).
    pub eval_iter: usize,
    /// The prompt of the sample printed after each epoch.
    pub start_context: &'a str,
    /// Tokens generated for that sample (book: 50).
    pub sample_tokens: i64,
    /// Also generate a sample every this many steps (0: only after each
    /// epoch, as the book), to watch the text improve within long epochs.
    pub sample_every: usize,
    /// Where the batches go (`Device::Cpu` or a GPU).
    pub device: Device,
    /// Gradient accumulation (the speed recipe's way to a larger batch
    /// than memory holds): one optimizer step per this many batches, each
    /// batch's loss divided by their number, so a step sees the gradient
    /// of one batch that many times larger. `global_step`, `eval_freq` and
    /// the schedule count optimizer steps. 1 (the book): a step per batch.
    pub grad_accum_steps: usize,
    /// Save a checkpoint after each epoch.
    pub checkpoint: Option<Checkpointing<'a>>,
    /// Also save a checkpoint every this many optimizer steps (0: only
    /// after each epoch). A run resumed from one continues exactly, within
    /// the epoch.
    pub checkpoint_every: usize,
    /// Continue from the history of a loaded checkpoint
    /// ([`checkpoint::load_training_checkpoint`]).
    pub resume: Option<TrainHistory>,
    /// Checked after every step: once it is `true` (set it from a Ctrl-C
    /// handler), the run saves a checkpoint and returns
    /// [`TrainError::Stopped`].
    pub stop: Option<&'a AtomicBool>,
    /// Stop as [`TrainOptions::stop`] does once this global step (counted
    /// from 1) is done; 0: never.
    pub stop_at_step: usize,
    /// Called after every evaluation ([`EvalHook`]).
    pub on_eval: Option<EvalHook<'a>>,
    /// Data-parallel training ([`crate::distributed`]): rank 0's weights
    /// are broadcast at the start, the gradients are averaged across the
    /// ranks after each backward pass, the loss shown is the mean over the
    /// ranks, and only rank 0 evaluates, prints, samples and saves. The
    /// training loader should be sharded
    /// ([`crate::text::loader::BatchSampler::distributed`]).
    pub distributed: Option<&'a crate::distributed::ProcessGroup>,
    /// No progress line and no printed evaluations or samples.
    pub quiet: bool,
}

impl std::fmt::Debug for TrainOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainOptions")
            .field("num_epochs", &self.num_epochs)
            .field("eval_freq", &self.eval_freq)
            .field("eval_iter", &self.eval_iter)
            .field("start_context", &self.start_context)
            .field("sample_tokens", &self.sample_tokens)
            .field("sample_every", &self.sample_every)
            .field("device", &self.device)
            .field("grad_accum_steps", &self.grad_accum_steps)
            .field("checkpoint", &self.checkpoint)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("resume", &self.resume.as_ref().map(|h| h.to_string()))
            .field("stop", &self.stop)
            .field("stop_at_step", &self.stop_at_step)
            .field("on_eval", &self.on_eval.is_some())
            .field(
                "distributed",
                &self.distributed.map(|pg| (pg.rank(), pg.world_size())),
            )
            .field("quiet", &self.quiet)
            .finish()
    }
}

impl Default for TrainOptions<'_> {
    fn default() -> Self {
        TrainOptions {
            num_epochs: 10,
            eval_freq: 5,
            eval_iter: 5,
            start_context: "Every effort moves you",
            sample_tokens: 50,
            sample_every: 0,
            device: Device::Cpu,
            grad_accum_steps: 1,
            checkpoint: None,
            checkpoint_every: 0,
            resume: None,
            stop: None,
            stop_at_step: 0,
            on_eval: None,
            distributed: None,
            quiet: false,
        }
    }
}

/// Appendix D's learning-rate schedule: from `initial_lr` up to `peak_lr`
/// linearly over `warmup_steps`, then down to `min_lr` along half a cosine
/// by the last of `total_steps`; and gradient clipping to `max_norm` (1.0 in
/// the book) once warm-up is over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub initial_lr: f64,
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// Clip the gradient norm to this after warm-up (`None`: never clip).
    pub max_norm: Option<f64>,
}

impl LrSchedule {
    /// The learning rate of step `global_step` (counted from 0), computed as
    /// the book does.
    ///
    /// ```
    /// use llm_core::train::pretrain::LrSchedule;
    ///
    /// let s = LrSchedule { initial_lr: 1e-5, peak_lr: 5e-4, min_lr: 1e-5, warmup_steps: 27,
    ///                      total_steps: 135, max_norm: Some(1.0) };
    /// assert_eq!(s.lr_at(0), 1e-5);
    /// assert!((s.lr_at(27) - 5e-4).abs() < 1e-12);   // the peak, right after warm-up
    /// assert!((s.lr_at(134) - 1e-5).abs() < 2e-7);  // close to the minimum at the end
    /// ```
    pub fn lr_at(&self, global_step: usize) -> f64 {
        if global_step < self.warmup_steps {
            let lr_increment = (self.peak_lr - self.initial_lr) / self.warmup_steps as f64;
            self.initial_lr + global_step as f64 * lr_increment
        } else {
            let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
            let progress = (global_step - self.warmup_steps) as f64 / decay_steps as f64;
            self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + (PI * progress).cos())
        }
    }

    /// Whether the book clips the gradients at this step: from the first
    /// step after warm-up on (`global_step >= warmup_steps`, as the book's
    /// code since its erratum; the printed book wrote `>`, which skipped
    /// clipping on that one step).
    pub fn clips_at(&self, global_step: usize) -> bool {
        self.max_norm.is_some() && global_step >= self.warmup_steps
    }

    /// The learning rate of every step, for the book's plot.
    pub fn lrs(&self) -> Vec<f64> {
        (0..self.total_steps).map(|s| self.lr_at(s)).collect()
    }
}

/// The book's `evaluate_model`: the mean loss over the first `eval_iter`
/// batches of each loader, without dropout or gradients.
pub fn evaluate_model<T: DataLoader + ?Sized, V: DataLoader + ?Sized>(
    model: &GptModel,
    train_loader: &T,
    val_loader: &V,
    device: Device,
    eval_iter: usize,
) -> (f64, f64) {
    let train_loss = calc_loss_loader(train_loader, model, device, Some(eval_iter));
    let val_loss = calc_loss_loader(val_loader, model, device, Some(eval_iter));
    (train_loss, val_loss)
}

/// The sample of the book's `generate_and_print_sample`, returned instead
/// of printed (the loop prints it under the progress line and keeps it in
/// the history): greedy decoding of `max_new_tokens` tokens after
/// `start_context`, decoded, with newlines shown as spaces (the book prints
/// it on one line).
pub fn generate_sample<T: Tokenizer + ?Sized>(
    model: &GptModel,
    tokenizer: &T,
    device: Device,
    start_context: &str,
    max_new_tokens: i64,
) -> Result<String, TokenizerError> {
    let encoded = text_to_token_ids(start_context, tokenizer)?.to_device(device);
    let token_ids = generate_text_simple(model, &encoded, max_new_tokens, model.cfg.context_length);
    Ok(token_ids_to_text(&token_ids, tokenizer)?.replace('\n', " "))
}

/// One step of the book's loop (§5.2): zero the gradients, the loss of
/// one batch, backward, (clip the gradients to `max_norm`,) the AdamW step.
/// Returns the batch's loss, or `Err(loss)` when the loss is NaN or
/// infinite — checked before `backward`, so such a loss never reaches the
/// weights.
///
/// ```
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::train::optim::{named_parameters, AdamW};
/// use llm_core::train::pretrain::train_step;
/// use llm_core::tch::{nn, Device, Kind, Tensor};
///
/// let cfg = GptConfig { vocab_size: 10, context_length: 4, emb_dim: 8, n_heads: 2, n_layers: 1,
///                       drop_rate: 0.0, qkv_bias: false };
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-2, 0.1);
/// let inputs = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
/// let targets = Tensor::from_slice(&[2i64, 3, 4, 5]).view([1, 4]);
/// let first = train_step(&model, &mut optimizer, &inputs, &targets, Device::Cpu, None).unwrap();
/// let later = (0..20)
///     .map(|_| train_step(&model, &mut optimizer, &inputs, &targets, Device::Cpu, None).unwrap())
///     .last()
///     .unwrap();
/// assert!(later < first);
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
pub fn train_step(
    model: &GptModel,
    optimizer: &mut AdamW,
    input_batch: &Tensor,
    target_batch: &Tensor,
    device: Device,
    max_norm: Option<f64>,
) -> Result<f64, f64> {
    train_step_accumulated(
        model,
        optimizer,
        &[(input_batch, target_batch)],
        device,
        max_norm,
    )
}

/// [`train_step`] over several micro-batches (gradient accumulation): zero
/// the gradients, then for each batch its loss divided by the number of
/// batches and backward (the gradients add up), then one (clip and) AdamW
/// step. With equal batch sizes this is the step of one batch as large as
/// all of them together. Returns the mean of the batches' losses, or
/// `Err(loss)` at the first NaN or infinite one (before its backward).
///
/// ```
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::train::optim::{named_parameters, AdamW};
/// use llm_core::train::pretrain::train_step_accumulated;
/// use llm_core::tch::{nn, Device, Tensor};
///
/// let cfg = GptConfig { vocab_size: 10, context_length: 4, emb_dim: 8, n_heads: 2, n_layers: 1,
///                       drop_rate: 0.0, qkv_bias: false };
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let mut optimizer = AdamW::new(named_parameters(&vs, &model.parameters()), 1e-2, 0.1);
/// let (x1, y1) = (Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]), Tensor::from_slice(&[2i64, 3, 4, 5]).view([1, 4]));
/// let (x2, y2) = (Tensor::from_slice(&[5i64, 6, 7, 8]).view([1, 4]), Tensor::from_slice(&[6i64, 7, 8, 9]).view([1, 4]));
/// let loss = train_step_accumulated(&model, &mut optimizer, &[(&x1, &y1), (&x2, &y2)], Device::Cpu, None).unwrap();
/// assert!(loss > 0.0 && optimizer.step_count() == 1);
/// # Ok::<(), llm_core::model::gpt::ModelError>(())
/// ```
pub fn train_step_accumulated(
    model: &GptModel,
    optimizer: &mut AdamW,
    batches: &[(&Tensor, &Tensor)],
    device: Device,
    max_norm: Option<f64>,
) -> Result<f64, f64> {
    let loss = backward_accumulated(model, optimizer, batches, device, true)?;
    clip_and_step(optimizer, max_norm);
    Ok(loss)
}

/// Zero the gradients, then forward and backward each batch (its loss
/// divided by their number, unless there is one: the book's step exactly);
/// returns the mean loss. With `stop_at_non_finite`, a NaN or infinite
/// loss returns it as the error before its backward pass.
fn backward_accumulated(
    model: &GptModel,
    optimizer: &mut AdamW,
    batches: &[(&Tensor, &Tensor)],
    device: Device,
    stop_at_non_finite: bool,
) -> Result<f64, f64> {
    optimizer.zero_grad();
    let n = batches.len();
    let mut total = 0.0;
    for (input_batch, target_batch) in batches {
        let loss = calc_loss_batch(input_batch, target_batch, model, device, true);
        let loss_value = loss.double_value(&[]);
        if stop_at_non_finite && !loss_value.is_finite() {
            return Err(loss_value);
        }
        if n == 1 {
            loss.backward(); // the book's step, exactly
        } else {
            (loss / n as f64).backward();
        }
        total += loss_value;
    }
    Ok(total / n.max(1) as f64)
}

/// Clip the gradients (appendix D, when `max_norm` is given), then step.
fn clip_and_step(optimizer: &mut AdamW, max_norm: Option<f64>) {
    if let Some(max_norm) = max_norm {
        let params: Vec<Tensor> = optimizer
            .params()
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .collect();
        clip_grad_norm(&params.iter().collect::<Vec<_>>(), max_norm);
    }
    optimizer.step();
}

/// [`train_step_accumulated`] on one rank of a data-parallel group: the
/// gradients are averaged across the ranks before clipping and the step,
/// and so are the loss and the ranks' stop requests. A non-finite loss on
/// any rank stops every rank at the same step (every rank takes part in
/// the all-reduce first, so none is left waiting). Returns the mean loss
/// and whether any rank asked to stop.
fn distributed_step(
    model: &GptModel,
    optimizer: &mut AdamW,
    batches: &[(&Tensor, &Tensor)],
    device: Device,
    max_norm: Option<f64>,
    pg: &crate::distributed::ProcessGroup,
    stop: bool,
) -> Result<(f64, bool), StepFailure> {
    let local =
        backward_accumulated(model, optimizer, batches, device, false).unwrap_or_else(|loss| loss);
    let grads: Vec<Tensor> = optimizer
        .params()
        .iter()
        .map(|(_, p)| p.grad())
        .filter(Tensor::defined)
        .collect();
    pg.all_reduce_mean(&grads)?;
    let sums = pg.sum_scalars(&[local, f64::from(u8::from(stop))])?;
    let loss = sums[0] / pg.world_size() as f64;
    if !loss.is_finite() {
        return Err(StepFailure::NonFinite(loss));
    }
    clip_and_step(optimizer, max_norm);
    Ok((loss, sums[1] > 0.0))
}

/// Why a distributed step failed.
enum StepFailure {
    NonFinite(f64),
    Dist(crate::distributed::DistError),
}

impl From<crate::distributed::DistError> for StepFailure {
    fn from(e: crate::distributed::DistError) -> Self {
        StepFailure::Dist(e)
    }
}

/// The book's `train_model_simple` (§5.2): AdamW at a fixed learning rate.
/// Returns the [`TrainHistory`] (losses, tokens seen, samples) for the plots.
pub fn train_model_simple<T, V, K>(
    model: &GptModel,
    train_loader: &T,
    val_loader: &V,
    optimizer: &mut AdamW,
    tokenizer: &K,
    opts: &TrainOptions,
) -> Result<TrainHistory, TrainError>
where
    T: DataLoader + ?Sized,
    V: DataLoader + ?Sized,
    K: Tokenizer + ?Sized,
{
    run(
        model,
        train_loader,
        val_loader,
        optimizer,
        tokenizer,
        opts,
        None,
    )
}

/// Appendix D's `train_model`: [`train_model_simple`] with the learning rate
/// of `schedule` set before each step (and recorded in `track_lrs`) and the
/// gradients clipped after warm-up.
pub fn train_model<T, V, K>(
    model: &GptModel,
    train_loader: &T,
    val_loader: &V,
    optimizer: &mut AdamW,
    tokenizer: &K,
    opts: &TrainOptions,
    schedule: &LrSchedule,
) -> Result<TrainHistory, TrainError>
where
    T: DataLoader + ?Sized,
    V: DataLoader + ?Sized,
    K: Tokenizer + ?Sized,
{
    run(
        model,
        train_loader,
        val_loader,
        optimizer,
        tokenizer,
        opts,
        Some(schedule),
    )
}

/// Check the options and learning rates before the first step: every
/// count at least 1 and every learning rate finite and not negative (a NaN
/// learning rate would silently turn the weights into NaN).
fn check_settings(
    opts: &TrainOptions,
    lr: f64,
    schedule: Option<&LrSchedule>,
) -> Result<(), TrainError> {
    let bad = |name: &'static str, value: String, accepted: &str| TrainError::Setting {
        name,
        value,
        accepted: accepted.to_string(),
    };
    for (name, value) in [
        ("num_epochs", opts.num_epochs),
        ("eval_freq", opts.eval_freq),
        ("eval_iter", opts.eval_iter),
        ("grad_accum_steps", opts.grad_accum_steps),
    ] {
        if value == 0 {
            return Err(bad(name, "0".into(), "1 or more"));
        }
    }
    if opts.sample_tokens < 0 {
        return Err(bad(
            "sample_tokens",
            opts.sample_tokens.to_string(),
            "0 or more",
        ));
    }
    let rates: Vec<(&'static str, f64)> = match schedule {
        None => vec![("lr", lr)],
        Some(s) => vec![
            ("initial_lr", s.initial_lr),
            ("peak_lr", s.peak_lr),
            ("min_lr", s.min_lr),
        ],
    };
    for (name, value) in rates {
        if !(value.is_finite() && value >= 0.0) {
            return Err(bad(name, value.to_string(), "a finite number, 0 or more"));
        }
    }
    if let Some(s) = schedule {
        if s.total_steps == 0 {
            return Err(bad("total_steps", "0".into(), "1 or more"));
        }
        if let Some(m) = s.max_norm.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return Err(bad(
                "max_norm",
                m.to_string(),
                "a positive finite number, or None",
            ));
        }
    }
    Ok(())
}

fn run<T, V, K>(
    model: &GptModel,
    train_loader: &T,
    val_loader: &V,
    optimizer: &mut AdamW,
    tokenizer: &K,
    opts: &TrainOptions,
    schedule: Option<&LrSchedule>,
) -> Result<TrainHistory, TrainError>
where
    T: DataLoader + ?Sized,
    V: DataLoader + ?Sized,
    K: Tokenizer + ?Sized,
{
    check_settings(opts, optimizer.lr, schedule)?;
    let batches_per_epoch = train_loader.num_batches();
    if batches_per_epoch == 0 {
        return Err(TrainError::EmptyLoader);
    }
    // with accumulation, a last group of fewer batches still makes a step
    let accum = opts.grad_accum_steps;
    let steps_per_epoch = batches_per_epoch.div_ceil(accum);
    let mut history = opts.resume.clone().unwrap_or_default();
    if opts.num_epochs <= history.epochs_completed {
        return Err(TrainError::Setting {
            name: "num_epochs",
            value: opts.num_epochs.to_string(),
            accepted: format!(
                "more than the {} epochs the resumed run has completed (num_epochs counts them too)",
                history.epochs_completed
            ),
        });
    }
    history.steps_per_epoch = steps_per_epoch;
    let first_epoch = history.epochs_completed;
    let total = (opts.num_epochs - first_epoch) * steps_per_epoch
        - history.batches_done.div_ceil(accum).min(steps_per_epoch);
    let pg = opts.distributed;
    let main = pg.is_none_or(|pg| pg.is_main());
    let mut bar = Progress::new("training", total);
    if opts.quiet || !main {
        bar = bar.quiet();
    }
    if let Some(pg) = pg {
        // every replica starts from rank 0's weights (DDP's constructor)
        let params: Vec<Tensor> = optimizer.params().iter().map(|(_, p)| p.detach()).collect();
        pg.broadcast(&params, 0)?;
    }
    let started = std::time::Instant::now();
    let seconds_before = history.train_seconds;
    let rng_err = |e: crate::rng::RngError| {
        TrainError::Checkpoint(crate::files::format_err(
            std::path::Path::new("<generator>"),
            e.to_string(),
        ))
    };

    // the book's loop (§5.2; appendix D adds the schedule and the clipping)
    for epoch in first_epoch..opts.num_epochs {
        // beyond the book: a run resumed within an epoch draws that epoch's
        // batch order again from the generator state the epoch began with,
        // then goes on from the state it stopped with
        train_loader.set_epoch(epoch);
        let skip = std::mem::take(&mut history.batches_done);
        let mut batches = match (skip, history.epoch_rng.take()) {
            (0, _) => {
                let at_start = RngState::capture(Device::Cpu).map_err(rng_err)?;
                history.epoch_rng = Some(at_start.bytes);
                train_loader.batch_iter()
            }
            (_, None) => {
                return Err(TrainError::Setting {
                    name: "resume",
                    value: format!("a history {skip} batches into epoch {}", epoch + 1),
                    accepted: "a history saved by this version (it records the generator state of the epoch's start)".into(),
                })
            }
            (_, Some(bytes)) => {
                let now = RngState::capture(Device::Cpu).map_err(rng_err)?;
                RngState { device: Device::Cpu, bytes: bytes.clone() }.restore().map_err(rng_err)?;
                let mut it = train_loader.batch_iter();
                now.restore().map_err(rng_err)?;
                history.epoch_rng = Some(bytes);
                for _ in 0..skip {
                    it.next();
                }
                it
            }
        };
        history.batches_done = skip;
        let mut step = skip / accum;
        loop {
            let group: Vec<(Tensor, Tensor)> = batches.by_ref().take(accum).collect();
            if group.is_empty() {
                break;
            }
            history.global_step += 1;
            let global_step = history.global_step;
            if let Some(s) = schedule {
                optimizer.lr = s.lr_at(global_step as usize);
                history.track_lrs.push(optimizer.lr);
            }
            let max_norm = schedule
                .filter(|s| s.clips_at(global_step as usize))
                .and_then(|s| s.max_norm);
            let group: Vec<(&Tensor, &Tensor)> = group.iter().map(|(x, y)| (x, y)).collect();
            let tokens: i64 = group.iter().map(|(x, _)| x.numel() as i64).sum();
            let asked = opts.stop.is_some_and(|s| s.load(Ordering::SeqCst));
            let non_finite = |loss: f64, lr: f64| TrainError::NonFinite {
                loss,
                epoch: epoch + 1,
                step,
                global_step,
                lr,
            };
            let (loss, stop_asked) = match pg {
                None => {
                    let loss =
                        train_step_accumulated(model, optimizer, &group, opts.device, max_norm)
                            .map_err(|loss| {
                                bar.finish();
                                non_finite(loss, optimizer.lr)
                            })?;
                    (loss, asked)
                }
                Some(pg) => match distributed_step(
                    model,
                    optimizer,
                    &group,
                    opts.device,
                    max_norm,
                    pg,
                    asked,
                ) {
                    Ok(r) => r,
                    Err(StepFailure::NonFinite(loss)) => {
                        bar.finish();
                        return Err(non_finite(loss, optimizer.lr));
                    }
                    Err(StepFailure::Dist(e)) => {
                        bar.finish();
                        return Err(e.into());
                    }
                },
            };
            history.tokens_seen += tokens;
            history.batches_done += group.len();
            history.step_losses.push(loss);

            if main && global_step % opts.eval_freq as i64 == 0 {
                let (train_loss, val_loss) =
                    evaluate_model(model, train_loader, val_loader, opts.device, opts.eval_iter);
                history.train_losses.push(train_loss);
                history.val_losses.push(val_loss);
                history.track_tokens_seen.push(history.tokens_seen);
                history.eval_steps.push(global_step);
                bar.println(&format!(
                        "Ep {} (Step {global_step:06}): Train loss {train_loss:.3}, Val loss {val_loss:.3}",
                        epoch + 1
                    ),
                );
                if let Some(hook) = opts.on_eval {
                    history.train_seconds = seconds_before + started.elapsed().as_secs_f64();
                    hook(&history);
                }
            }

            // beyond the book: the progress line and samples within an epoch
            bar.add_tokens(tokens as u64);
            bar.set("loss", loss);
            if schedule.is_some() {
                bar.set("lr", optimizer.lr);
            }
            if main && opts.sample_every > 0 && (global_step + 1) % opts.sample_every as i64 == 0 {
                let sample = generate_sample(
                    model,
                    tokenizer,
                    opts.device,
                    opts.start_context,
                    opts.sample_tokens,
                )?;
                bar.println(&format!("[step {}] {sample}", global_step + 1));
                history.step_samples.push((global_step + 1, sample));
            }
            bar.inc(1);
            step += 1;

            // beyond the book: checkpoints within an epoch, and stopping
            // one process reads the flag now; ranks agreed on it in the step
            let stop = stop_asked
                || (pg.is_none() && opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)))
                || (opts.stop_at_step > 0 && global_step + 1 >= opts.stop_at_step as i64);
            let due =
                opts.checkpoint_every > 0 && (global_step + 1) % opts.checkpoint_every as i64 == 0;
            if stop || due {
                history.train_seconds = seconds_before + started.elapsed().as_secs_f64();
                if let Some(c) = opts.checkpoint.as_ref().filter(|_| main) {
                    checkpoint::save_training_checkpoint(
                        &c.dir, c.vs, &model.cfg, optimizer, &history,
                    )?;
                    if !stop {
                        bar.println(&format!(
                            "checkpoint saved in {} (step {})",
                            c.dir.display(),
                            global_step + 1
                        ));
                    }
                }
            }
            if stop {
                bar.finish();
                return Err(TrainError::Stopped {
                    global_step,
                    saved: opts.checkpoint.as_ref().map(|c| c.dir.clone()),
                    history: Box::new(history),
                });
            }
        }
        if main {
            let sample = generate_sample(
                model,
                tokenizer,
                opts.device,
                opts.start_context,
                opts.sample_tokens,
            )?;
            bar.println(&sample);
            history.samples.push(sample);
        }

        // beyond the book: a checkpoint after every epoch
        history.epochs_completed = epoch + 1;
        history.batches_done = 0;
        history.epoch_rng = None;
        history.train_seconds = seconds_before + started.elapsed().as_secs_f64();
        if let Some(c) = opts.checkpoint.as_ref().filter(|_| main) {
            checkpoint::save_training_checkpoint(&c.dir, c.vs, &model.cfg, optimizer, &history)?;
        }
    }
    bar.finish();
    history.train_seconds = seconds_before + started.elapsed().as_secs_f64();
    Ok(history)
}
