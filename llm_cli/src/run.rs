//! A training run's directory and its long-run behaviour: the saved
//! configuration, the checkpoint, the metrics log, the loss plot, and
//! Ctrl-C.
//!
//! ```text
//! runs/shakespeare/
//!   config.toml      the resolved settings (what --resume reads back)
//!   checkpoint/      weights, AdamW state, generator state, history (atomic)
//!   metrics.jsonl    one line per evaluation
//!   loss.svg         the book's loss plot, redrawn at every evaluation
//!   model/           the final model, Hugging Face layout (config.json, model.safetensors)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use llm_core::train::history::TrainHistory;

/// Set by Ctrl-C (SIGINT) or SIGTERM: the training loop saves a checkpoint
/// after the step in progress and stops.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells do).
pub const INTERRUPTED: u8 = 130;

/// Install the Ctrl-C handler: the first asks for a stop after the current
/// step (with a checkpoint); a second exits at once (the last checkpoint is
/// intact: every save is atomic).
pub fn handle_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting now; the last checkpoint is intact");
            std::process::exit(INTERRUPTED as i32);
        }
        eprintln!(
            "\ninterrupt: stopping after this step and saving a checkpoint (again to quit at once)"
        );
    });
}

/// A run directory (see the module docs).
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunDir { dir: dir.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    pub fn loss_svg(&self) -> PathBuf {
        self.dir.join("loss.svg")
    }
    pub fn model(&self) -> PathBuf {
        self.dir.join("model")
    }

    /// Start a new run here: refuse a directory that holds an earlier
    /// run's checkpoint (it would be overwritten), then write `config.toml`.
    pub fn start(&self, config_toml: &str, command: &str) -> Result<()> {
        if self.checkpoint().join("checkpoint.json").exists() {
            bail!(
                "{} holds the checkpoint of an earlier run: continue it with `llm {command} --resume {}`, or choose another --out",
                self.dir.display(),
                self.dir.display()
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("{}: cannot create the run directory", self.dir.display()))?;
        llm_core::files::write_bytes(self.config(), config_toml.as_bytes())?;
        let _ = std::fs::remove_file(self.metrics());
        Ok(())
    }

    /// The saved configuration of the run to resume (an error naming the
    /// directory when it is not one).
    pub fn resume_config(&self, command: &str) -> Result<PathBuf> {
        let config = self.config();
        if !config.is_file() {
            bail!(
                "{}: not a run directory of `llm {command}` (no config.toml)",
                self.dir.display()
            );
        }
        Ok(config)
    }

    /// Keep the metrics of evaluations up to `global_step` (a resumed run
    /// repeats the steps after its checkpoint, and logs them again).
    pub fn trim_metrics(&self, global_step: i64) -> Result<()> {
        let path = self.metrics();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["global_step"].as_i64())
                    .is_some_and(|s| s <= global_step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        llm_core::files::write_bytes(&path, kept.as_bytes())?;
        Ok(())
    }

    /// Append one evaluation's line to `metrics.jsonl` and redraw `loss.svg`
    /// (called after every evaluation; failures are reported, not fatal).
    pub fn log_evaluation(&self, h: &TrainHistory, lr: Option<f64>) {
        let i = h.train_losses.len() - 1;
        let steps_per_epoch = h.steps_per_epoch.max(1) as f64;
        let mut line = serde_json::json!({
            "global_step": h.eval_steps[i],
            "epoch": (h.eval_steps[i] + 1) as f64 / steps_per_epoch,
            "tokens_seen": h.track_tokens_seen[i],
            "train_loss": h.train_losses[i],
            "val_loss": h.val_losses[i],
            "train_seconds": h.train_seconds,
        });
        if let Some(loss) = h.step_losses.last() {
            // the step's own batch loss (all ranks' mean with data parallelism)
            line["loss"] = (*loss).into();
        }
        if let Some(lr) = lr.or_else(|| h.track_lrs.last().copied()) {
            line["lr"] = lr.into();
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.metrics())?;
            writeln!(f, "{line}")
        };
        if let Err(e) = write() {
            eprintln!("warning: {}: {e}", self.metrics().display());
        }
        if let Err(e) = h.loss_plot().save(self.loss_svg()) {
            eprintln!("warning: {}: {e}", self.loss_svg().display());
        }
    }
}

/// The exit status of a rank other than 0 that stopped with the others.
pub fn stopped_quietly() -> ExitCode {
    if STOP.load(Ordering::SeqCst) {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    }
}

/// What a stopped run prints, and its exit status: 130 after Ctrl-C, 0
/// after `--stop-at-step`.
pub fn stopped(global_step: i64, saved: Option<&Path>, command: &str, run: &RunDir) -> ExitCode {
    match saved {
        Some(dir) => println!(
            "stopped after step {}; checkpoint in {}. Continue with: llm {command} --resume {}",
            global_step + 1,
            dir.display(),
            run.dir.display()
        ),
        None => println!("stopped after step {}", global_step + 1),
    }
    if STOP.load(Ordering::SeqCst) {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    }
}
