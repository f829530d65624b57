//! `llm dpo`: direct preference optimization of an instruction model (the
//! bonus of chapter 7), against a frozen copy of itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_core::finetune::dpo::{
    evaluate_dpo_loss_loader, load_preference_data, train_model_dpo, DpoHistory, DpoOptions,
    PreferenceCollate, PreferenceDataset,
};
use llm_core::finetune::instruct::{split_data, PromptStyle};
use llm_core::tch;
use llm_core::text::tokenizer::Gpt2Tokenizer;
use llm_core::text::tokenizer::Tokenizer;
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::Checkpointing;

use crate::config::{self, flag, Common};
use crate::finetune::TrainFlags;
use crate::run::RunDir;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm dpo --base-model runs/instruct --out runs/dpo
  llm dpo --resume runs/dpo                   # continues after the last finished epoch

Settings: base_model (runs/instruct: the instruction model, also the frozen
reference), out_dir (runs/dpo), data (instruction-data-with-preference.json), beta
(0.1), learning_rate (5e-6), weight_decay (0.01), num_epochs (1), batch_size (8),
eval_freq (5), eval_iter (5), max_train_entries (0: all), seed (123), device.
A checkpoint is saved after every epoch. Writes DIR/checkpoint/, DIR/metrics.jsonl
and DIR/model/ (Hugging Face layout).")]
pub struct DpoArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    train: TrainFlags,
    /// Continue the run in DIR from its last epoch's checkpoint
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
}

pub fn run(args: DpoArgs) -> Result<ExitCode> {
    let mut files = Vec::new();
    let mut flags = args.train.flags("--out");
    if let Some(dir) = &args.resume {
        files.push(RunDir::new(dir).resume_config("dpo")?);
        flags.push(flag!(
            "--resume",
            "out_dir",
            Some(dir.display().to_string())
        ));
    }
    let mut s = config::settings(&args.common, &files, flags)?;
    let base: String = s.try_get("base_model", "runs/instruct".to_string())?;
    let run = RunDir::new(s.try_get("out_dir", "runs/dpo".to_string())?);
    let data: String = s.try_get("data", "instruction-data-with-preference.json".to_string())?;
    let beta = s.try_get("beta", 0.1f64)?;
    let learning_rate = s.try_get("learning_rate", 5e-6f64)?;
    let weight_decay = s.try_get("weight_decay", 0.01f64)?;
    let num_epochs = s.try_get("num_epochs", 1usize)?;
    let batch_size = s.try_get("batch_size", 8usize)?;
    let eval_freq = s.try_get("eval_freq", 5usize)?;
    let eval_iter = s.try_get("eval_iter", 5usize)?;
    let max_train_entries = s.try_get("max_train_entries", 0usize)?;
    let seed = s.try_get("seed", 123i64)?;
    let device = config::device(&mut s)?;
    config::check_unread(&s, "dpo")?;
    config::print(&s);
    let source = crate::models::ModelSource::find(&base)?;
    println!("policy and reference: {source}, {:?}", source.config()?);
    if args.common.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if args.resume.is_none() {
        run.start(&config::to_toml(&s, "dpo"), "dpo")?;
    }

    let path = if std::path::Path::new(&data).is_file() {
        PathBuf::from(&data)
    } else {
        llm_core::data::path(&data)?
    };
    let entries = load_preference_data(&path)?;
    let split = split_data(&entries, None);
    let (mut train_data, val_data) = (split.train_data, split.val_data);
    if max_train_entries > 0 {
        train_data.truncate(max_train_entries);
    }
    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let (mut vs, policy, _) = crate::models::load_gpt(&base, device)?;
    // answers cut off entirely leave nothing to compare (a NaN loss)
    let shortest = train_data
        .iter()
        .map(|e| {
            let prompt = PromptStyle::Alpaca.format_input(&e.instruction_entry());
            tokenizer.encode(&prompt).map(|ids| ids.len())
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min()
        .unwrap_or(0);
    if shortest + 2 >= policy.cfg.context_length as usize {
        bail!(
            "the model's context_length {} leaves no room for the answers: the shortest prompt has {shortest} tokens",
            policy.cfg.context_length
        );
    }
    let (_vs_ref, reference, _) = crate::models::load_gpt(&base, device)?;
    for p in reference.parameters() {
        let _ = p.set_requires_grad(false);
    }
    let collate = PreferenceCollate {
        allowed_max_length: Some(policy.cfg.context_length as usize),
        device,
        ..PreferenceCollate::default()
    };
    tch::manual_seed(seed);
    let train_loader = PreferenceDataset::new(&train_data, &tokenizer)?
        .into_loader(batch_size, true, true, collate);
    let val_loader = PreferenceDataset::new(&val_data, &tokenizer)?
        .into_loader(batch_size, false, false, collate);
    println!(
        "{}: {} training and {} validation pairs",
        path.display(),
        train_data.len(),
        val_data.len()
    );
    let mut optimizer = AdamW::new(
        named_parameters(&vs, &policy.parameters()),
        learning_rate,
        weight_decay,
    );
    let resume = match &args.resume {
        Some(_) => {
            let info = llm_core::train::checkpoint::load_training_checkpoint_of::<DpoHistory>(
                run.checkpoint(),
                &mut vs,
                &mut optimizer,
            )?;
            println!(
                "resuming after epoch {} (step {})",
                info.history.epochs_done, info.history.global_step
            );
            Some(info.history)
        }
        None => {
            let (train, val) = evaluate_dpo_loss_loader(
                &policy,
                &reference,
                &train_loader,
                &val_loader,
                beta,
                eval_iter,
            );
            println!(
                "before DPO: train loss {:.3}, val loss {:.3}",
                train.loss, val.loss
            );
            None
        }
    };
    let history = train_model_dpo(
        &policy,
        &reference,
        &train_loader,
        &val_loader,
        &mut optimizer,
        &DpoOptions {
            num_epochs,
            beta,
            eval_freq,
            eval_iter,
        },
        Some(&Checkpointing {
            vs: &vs,
            dir: run.checkpoint(),
        }),
        resume,
    )?;
    let mut lines = String::new();
    for i in 0..history.train_losses.len() {
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({
                "global_step": history.steps[i], "tokens_seen": history.tokens_seen[i],
                "train_loss": history.train_losses[i], "val_loss": history.val_losses[i],
                "train_reward_margin": history.train_reward_margins()[i],
                "val_reward_margin": history.val_reward_margins()[i],
            })
        ));
    }
    llm_core::files::write_bytes(run.metrics(), lines.as_bytes())?;
    llm_core::model::gpt2_weights::export_gpt2(&policy, run.model())
        .with_context(|| format!("{}: exporting the aligned model", run.model().display()))?;
    println!(
        "model: {}\nmetrics: {}",
        run.model().display(),
        run.metrics().display()
    );
    Ok(ExitCode::SUCCESS)
}
