//! What a training run records (chapter 5 and appendix D): the losses at
//! each evaluation, the tokens seen, the learning rates and the samples —
//! for the book's loss plot, and saved in every training checkpoint.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// The training loss of each step (its batch; with data parallelism,
    /// the mean over the ranks).
    #[serde(default)]
    pub step_losses: Vec<f64>,
    /// The greedy sample generated after each epoch.
    pub samples: Vec<String>,
    /// `(global step, sample)` every [`crate::train::pretrain::TrainOptions::sample_every`] steps.
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
    /// Batches of the current epoch already trained on: 0 at an epoch's
    /// end, more when a checkpoint was saved within an epoch
    /// ([`crate::train::pretrain::TrainOptions::checkpoint_every`], Ctrl-C).
    #[serde(default)]
    pub batches_done: usize,
    /// libtorch's CPU generator state when the current epoch began, so a
    /// run resumed within an epoch draws the same batch order again. Saved
    /// as hexadecimal; `None` at an epoch's end.
    #[serde(default, with = "hex_bytes", skip_serializing_if = "Option::is_none")]
    pub epoch_rng: Option<Vec<u8>>,
}

/// `Option<Vec<u8>>` as a hexadecimal string in JSON (a 5 KB generator
/// state as an array of numbers would be 20 KB of noise).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom(
                "an odd number of hexadecimal digits",
            ));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&text[i..i + 2], 16)
                    .map_err(|_| serde::de::Error::custom(format!("not hexadecimal at {i}")))
            })
            .collect::<Result<Vec<u8>, D::Error>>()
            .map(Some)
    }
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
            step_losses: Vec::new(),
            samples: Vec::new(),
            step_samples: Vec::new(),
            epochs_completed: 0,
            global_step: -1,
            tokens_seen: 0,
            steps_per_epoch: 0,
            train_seconds: 0.0,
            batches_done: 0,
            epoch_rng: None,
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
