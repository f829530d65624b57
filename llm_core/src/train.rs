//! Chapter 5.2 and appendix D: the training loop.
//!
//! | book (§) | here |
//! |---|---|
//! | 5.2 | [`train_model_simple`], [`evaluate_model`], [`generate_and_print_sample`] |
//! | D.1–D.3 | [`LrSchedule`] (linear warm-up, cosine decay), gradient clipping ([`crate::optim::clip_grad_norm`]) |
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
//! use llm_core::dataset::GptDatasetV1;
//! use llm_core::model::{GptConfig, GptModel};
//! use llm_core::optim::{named_parameters, AdamW};
//! use llm_core::tokenizer::SimpleTokenizerV1;
//! use llm_core::train::{train_model_simple, TrainOptions};
//! use llm_core::tch::{self, nn, Device};
//!
//! let text = "the cat sat on the mat and the dog sat on the log ".repeat(8);
//! let tokenizer = SimpleTokenizerV1::from_text(&text);
//! let ids = llm_core::tokenizer::Tokenizer::encode(&tokenizer, &text)?;
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
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Device;

use crate::checkpoint::{self, CheckpointError};
use crate::generate::{text_to_token_ids, token_ids_to_text};
use crate::loader::DataLoader;
use crate::loss::{calc_loss_batch, calc_loss_loader};
use crate::model::{generate_text_simple, GptModel};
use crate::optim::{clip_grad_norm, AdamW};
use crate::progress::Progress;
use crate::tokenizer::{Tokenizer, TokenizerError};

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
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Everything a training run records, for plots and for resuming.
///
/// `train_losses`, `val_losses`, `track_tokens_seen` and `eval_steps` have one
/// entry per evaluation; `track_lrs` one per step; `samples` one per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainHistory {
    pub train_losses: Vec<f64>,
    pub val_losses: Vec<f64>,
    pub track_tokens_seen: Vec<i64>,
    /// The global step of each evaluation.
    pub eval_steps: Vec<i64>,
    /// The learning rate of each step.
    pub track_lrs: Vec<f64>,
    /// The greedy sample generated after each epoch.
    pub samples: Vec<String>,
    /// `(global step, sample)` every [`TrainOptions::sample_every`] steps.
    #[serde(default)]
    pub step_samples: Vec<(i64, String)>,
    /// Epochs finished so far.
    pub epochs_completed: usize,
    /// The last step taken, counted from 0 (−1 before the first).
    pub global_step: i64,
    /// Input tokens trained on so far.
    pub tokens_seen: i64,
    /// Steps in one epoch (to place evaluations on an epochs axis).
    pub steps_per_epoch: usize,
    /// Seconds spent training (summed over resumed runs).
    pub train_seconds: f64,
}

impl Default for TrainHistory {
    /// A history before the first step (`global_step = -1`, as the book).
    fn default() -> Self {
        TrainHistory {
            train_losses: Vec::new(),
            val_losses: Vec::new(),
            track_tokens_seen: Vec::new(),
            eval_steps: Vec::new(),
            track_lrs: Vec::new(),
            samples: Vec::new(),
            step_samples: Vec::new(),
            epochs_completed: 0,
            global_step: -1,
            tokens_seen: 0,
            steps_per_epoch: 0,
            train_seconds: 0.0,
        }
    }
}

impl TrainHistory {
    /// A history before the first step (`global_step = -1`, as the book).
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch (fractional) at which each evaluation happened, for the
    /// x-axis of the book's loss plot: evaluation after step `s` sits at
    /// `(s + 1) / steps_per_epoch`.
    pub fn epochs_seen(&self) -> Vec<f64> {
        let per = self.steps_per_epoch.max(1) as f64;
        self.eval_steps
            .iter()
            .map(|&s| (s + 1) as f64 / per)
            .collect()
    }

    /// The book's loss plot of this history: losses against epochs, with
    /// the tokens seen on the top axis.
    pub fn loss_plot(&self) -> crate::plot::LineChart {
        let tokens: Vec<f64> = self.track_tokens_seen.iter().map(|&t| t as f64).collect();
        crate::plot::loss_plot(
            &self.epochs_seen(),
            &tokens,
            &self.train_losses,
            &self.val_losses,
        )
    }

    /// Tokens per second over the whole run.
    pub fn tokens_per_second(&self) -> f64 {
        if self.train_seconds > 0.0 {
            self.tokens_seen as f64 / self.train_seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for TrainHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} epochs, {} steps, {} tokens in {}",
            self.epochs_completed,
            self.global_step + 1,
            self.tokens_seen,
            crate::progress::format_duration(self.train_seconds)
        )?;
        if let (Some(t), Some(v)) = (self.train_losses.last(), self.val_losses.last()) {
            write!(f, "; last evaluation: train loss {t:.3}, val loss {v:.3}")?;
        }
        Ok(())
    }
}

/// Where to save a checkpoint after every epoch.
#[derive(Debug)]
pub struct Checkpointing<'a> {
    /// The store holding the model's weights.
    pub vs: &'a VarStore,
    /// The checkpoint directory (replaced as a whole after each epoch).
    pub dir: PathBuf,
}

/// The knobs of the training loops (the book's keyword arguments).
#[derive(Debug)]
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
    /// Save a checkpoint after each epoch.
    pub checkpoint: Option<Checkpointing<'a>>,
    /// Continue from the history of a loaded checkpoint
    /// ([`checkpoint::load_training_checkpoint`]).
    pub resume: Option<TrainHistory>,
    /// No progress line and no printed evaluations or samples.
    pub quiet: bool,
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
            checkpoint: None,
            resume: None,
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
    /// use llm_core::train::LrSchedule;
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

    /// Whether the book clips the gradients at this step: after warm-up
    /// (`global_step > warmup_steps`, as printed in the book).
    pub fn clips_at(&self, global_step: usize) -> bool {
        self.max_norm.is_some() && global_step > self.warmup_steps
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

/// The book's `generate_and_print_sample` without the print: greedy
/// decoding of `max_new_tokens` tokens after `start_context`, decoded, with
/// newlines shown as spaces (the book prints it on one line).
pub fn generate_and_print_sample<T: Tokenizer + ?Sized>(
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
    let steps_per_epoch = train_loader.num_batches();
    if steps_per_epoch == 0 {
        return Err(TrainError::EmptyLoader);
    }
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
    let total = opts.num_epochs.saturating_sub(first_epoch) * steps_per_epoch;
    let mut bar = Progress::new("training", total);
    if opts.quiet {
        bar = bar.quiet();
    }
    let started = std::time::Instant::now();
    let seconds_before = history.train_seconds;
    let params: Vec<_> = optimizer
        .params()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .collect();
    let param_refs: Vec<&tch::Tensor> = params.iter().collect();

    for epoch in first_epoch..opts.num_epochs {
        for (step, (input_batch, target_batch)) in train_loader.batches().into_iter().enumerate() {
            optimizer.zero_grad();
            history.global_step += 1;
            let global_step = history.global_step;
            if let Some(s) = schedule {
                optimizer.lr = s.lr_at(global_step as usize);
                history.track_lrs.push(optimizer.lr);
            }
            let loss = calc_loss_batch(&input_batch, &target_batch, model, opts.device, true);
            let loss_value = loss.double_value(&[]);
            if !loss_value.is_finite() {
                if !opts.quiet {
                    bar.finish();
                }
                return Err(TrainError::NonFinite {
                    loss: loss_value,
                    epoch: epoch + 1,
                    step,
                    global_step,
                    lr: optimizer.lr,
                });
            }
            loss.backward();
            if let Some(max_norm) = schedule
                .filter(|s| s.clips_at(global_step as usize))
                .and_then(|s| s.max_norm)
            {
                clip_grad_norm(&param_refs, max_norm);
            }
            optimizer.step();
            let n = input_batch.numel() as i64;
            history.tokens_seen += n;
            bar.add_tokens(n as u64);
            bar.set("loss", loss_value);
            if schedule.is_some() {
                bar.set("lr", optimizer.lr);
            }
            if opts.eval_freq > 0 && global_step % opts.eval_freq as i64 == 0 {
                let (train_loss, val_loss) =
                    evaluate_model(model, train_loader, val_loader, opts.device, opts.eval_iter);
                history.train_losses.push(train_loss);
                history.val_losses.push(val_loss);
                history.track_tokens_seen.push(history.tokens_seen);
                history.eval_steps.push(global_step);
                if !opts.quiet {
                    bar.println(&format!(
                        "Ep {} (Step {global_step:06}): Train loss {train_loss:.3}, Val loss {val_loss:.3}",
                        epoch + 1
                    ));
                }
            }
            if opts.sample_every > 0 && (global_step + 1) % opts.sample_every as i64 == 0 {
                let sample = generate_and_print_sample(
                    model,
                    tokenizer,
                    opts.device,
                    opts.start_context,
                    opts.sample_tokens,
                )?;
                if !opts.quiet {
                    bar.println(&format!("[step {}] {sample}", global_step + 1));
                }
                history.step_samples.push((global_step + 1, sample));
            }
            bar.inc(1);
        }
        let sample = generate_and_print_sample(
            model,
            tokenizer,
            opts.device,
            opts.start_context,
            opts.sample_tokens,
        )?;
        if !opts.quiet {
            bar.println(&sample);
        }
        history.samples.push(sample);
        history.epochs_completed = epoch + 1;
        history.train_seconds = seconds_before + started.elapsed().as_secs_f64();
        if let Some(c) = &opts.checkpoint {
            checkpoint::save_training_checkpoint(&c.dir, c.vs, &model.cfg, optimizer, &history)?;
        }
    }
    if !opts.quiet {
        bar.finish();
    }
    history.train_seconds = seconds_before + started.elapsed().as_secs_f64();
    Ok(history)
}
