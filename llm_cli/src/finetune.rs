//! `llm finetune classify` (chapter 6) and `llm finetune instruct`
//! (chapter 7, optionally with appendix E's LoRA).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use llm_core::finetune::classifier::{
    calc_accuracy_loader, prepare_for_classification, train_classifier_simple, ClassifierOptions,
    Trainable,
};
use llm_core::finetune::instruct::{
    generate_responses, load_instruction_data, save_instruction_data, split_data, CollateOptions,
    InstructionDataset, PromptStyle,
};
use llm_core::finetune::spam::{
    create_balanced_dataset, random_split, read_sms_collection, Quoting, SpamDataset, PAD_TOKEN_ID,
};
use llm_core::model::gpt::GptConfig;
use llm_core::tch;
use llm_core::text::tokenizer::Gpt2Tokenizer;
use llm_core::train::optim::{named_parameters, AdamW};
use llm_core::train::pretrain::{train_model_simple, Checkpointing, TrainError, TrainOptions};
use serde::{Deserialize, Serialize};

use crate::config::{self, flag, Common};
use crate::run::{self, RunDir};

#[derive(Subcommand, Debug)]
pub enum FinetuneCommand {
    /// Chapter 6: a spam classifier on the SMS Spam Collection (the book's balanced split)
    Classify(ClassifyArgs),
    /// Chapter 7: follow instructions (Alpaca format), fully or with LoRA (appendix E)
    Instruct(InstructArgs),
}

pub fn run(command: FinetuneCommand) -> Result<ExitCode> {
    match command {
        FinetuneCommand::Classify(a) => classify(a),
        FinetuneCommand::Instruct(a) => instruct(a),
    }
}

/// The flags both fine-tunes share.
#[derive(Args, Debug)]
pub struct TrainFlags {
    /// The model to start from: a run directory, checkpoint, export or GPT-2 name
    #[arg(short, long)]
    base_model: Option<String>,
    /// The run directory
    #[arg(short, long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[arg(long)]
    num_epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    seed: Option<i64>,
    #[arg(long)]
    device: Option<String>,
}

impl TrainFlags {
    pub fn flags(&self, out_flag: &'static str) -> Vec<config::Flag> {
        vec![
            flag!("--base-model", "base_model", self.base_model),
            flag!(
                out_flag,
                "out_dir",
                self.out.as_ref().map(|p| p.display().to_string())
            ),
            flag!("--num-epochs", "num_epochs", self.num_epochs),
            flag!("--batch-size", "batch_size", self.batch_size),
            flag!("--learning-rate", "learning_rate", self.learning_rate),
            flag!("--seed", "seed", self.seed),
            flag!("--device", "device", self.device),
        ]
    }
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm finetune classify --base-model gpt2-small --out runs/spam
  llm finetune classify --base-model runs/shakespeare --out runs/spam -s trainable=all
  llm eval --classifier runs/spam

Settings: base_model (gpt2-small (124M)), out_dir (runs/classify), trainable
(last-block, last-two-blocks, all), learning_rate (5e-5), weight_decay (0.1),
num_epochs (5), batch_size (8), eval_freq (50), eval_iter (5), max_train_batches
(0: all), seed (123), device.
Writes DIR/classifier.safetensors, DIR/classifier.json and DIR/metrics.jsonl.")]
pub struct ClassifyArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    train: TrainFlags,
}

/// What `classifier.json` records beside the weights.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub config: GptConfig,
    pub num_classes: i64,
    /// The length every message is padded to (the longest training message).
    pub max_length: usize,
    pub trainable: String,
    pub base_model: String,
}

/// The book's spam data: balanced, split 70/10/20 with seed 123.
pub fn spam_splits() -> Result<[Vec<llm_core::finetune::spam::SmsMessage>; 3]> {
    let tsv = llm_core::data::path("sms_spam_collection/SMSSpamCollection.tsv")?;
    let messages = read_sms_collection(&tsv, Quoting::Pandas)?;
    let balanced = create_balanced_dataset(&messages, 123);
    let (train, val, test) = random_split(&balanced, 0.7, 0.1, 123);
    Ok([train, val, test])
}

fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    let mut s = config::settings(&args.common, &[], args.train.flags("--out"))?;
    let base: String = s.try_get("base_model", "gpt2-small (124M)".to_string())?;
    let run = RunDir::new(s.try_get("out_dir", "runs/classify".to_string())?);
    let trainable: Trainable = s.try_get("trainable", Trainable::LastBlock)?;
    let learning_rate = s.try_get("learning_rate", 5e-5f64)?;
    let weight_decay = s.try_get("weight_decay", 0.1f64)?;
    let num_epochs = s.try_get("num_epochs", 5usize)?;
    let batch_size = s.try_get("batch_size", 8usize)?;
    let eval_freq = s.try_get("eval_freq", 50usize)?;
    let eval_iter = s.try_get("eval_iter", 5usize)?;
    let max_train_batches = s.try_get("max_train_batches", 0usize)?;
    let seed = s.try_get("seed", 123i64)?;
    let device = config::device(&mut s)?;
    config::check_unread(&s, "finetune classify")?;
    config::print(&s);
    let source = crate::models::ModelSource::find(&base)?;
    println!("base model: {source}, {:?}", source.config()?);
    if args.common.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&run.dir)?;
    llm_core::files::write_bytes(
        run.config(),
        config::to_toml(&s, "finetune classify").as_bytes(),
    )?;

    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let [mut train_df, val_df, test_df] = spam_splits()?;
    if max_train_batches > 0 {
        train_df.truncate(max_train_batches * batch_size);
    }
    let train_ds = SpamDataset::new(&train_df, &tokenizer, None, PAD_TOKEN_ID)?;
    let max_length = train_ds.max_length;
    let val_ds = SpamDataset::new(&val_df, &tokenizer, Some(max_length), PAD_TOKEN_ID)?;
    let test_ds = SpamDataset::new(&test_df, &tokenizer, Some(max_length), PAD_TOKEN_ID)?;
    tch::manual_seed(seed);
    let train_loader = train_ds.try_into_loader(batch_size, true, true)?;
    let val_loader = val_ds.try_into_loader(batch_size, false, false)?;
    let test_loader = test_ds.try_into_loader(batch_size, false, false)?;

    let (vs, mut model, _) = crate::models::load_gpt(&base, device)?;
    if max_length as i64 > model.cfg.context_length {
        bail!(
            "the longest training message has {max_length} tokens, more than the base model's context_length {}",
            model.cfg.context_length
        );
    }
    tch::manual_seed(seed);
    let counts = prepare_for_classification(&vs, &mut model, 2, trainable);
    println!("{trainable}: {counts}");
    tch::manual_seed(seed);
    let mut optimizer = AdamW::new(
        named_parameters(&vs, &model.parameters()),
        learning_rate,
        weight_decay,
    );
    let opts = ClassifierOptions {
        num_epochs,
        eval_freq,
        eval_iter,
        device,
        quiet: false,
    };
    let history =
        train_classifier_simple(&model, &train_loader, &val_loader, &mut optimizer, &opts)?;
    let mut lines = String::new();
    for i in 0..history.train_losses.len() {
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"evaluation": i, "examples_seen": history.track_examples_seen[i],
                               "train_loss": history.train_losses[i], "val_loss": history.val_losses[i]})
        ));
    }
    llm_core::files::write_bytes(run.metrics(), lines.as_bytes())?;

    llm_core::files::save_varstore(&vs, run.dir.join("classifier.safetensors"))?;
    let info = ClassifierInfo {
        config: model.cfg,
        num_classes: 2,
        max_length,
        trainable: trainable.to_string(),
        base_model: base,
    };
    llm_core::files::write_bytes(
        run.dir.join("classifier.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    for (name, loader) in [
        ("Training", &train_loader),
        ("Validation", &val_loader),
        ("Test", &test_loader),
    ] {
        let acc = calc_accuracy_loader(loader, &model, device, None);
        println!("{name} accuracy: {:.2}%", acc * 100.0);
    }
    println!(
        "fine-tuned in {:.2} minutes; classifier: {}",
        history.train_seconds / 60.0,
        run.dir.join("classifier.safetensors").display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm finetune instruct --base-model gpt2-medium --out runs/instruct
  llm finetune instruct --base-model runs/shakespeare --out runs/instruct-lora -s lora_rank=16
  llm finetune instruct --resume runs/instruct              # after Ctrl-C or a crash
  llm eval --responses runs/instruct/test-responses.json

Settings: base_model (gpt2-medium (355M)), out_dir (runs/instruct), data
(instruction-data.json: a data file name or a path), prompt_style (alpaca, phi3),
mask_instructions (false), lora_rank (0: full fine-tuning), lora_alpha (16),
learning_rate (5e-5), weight_decay (0.1), num_epochs (2), batch_size (8), eval_freq
(5), eval_iter (5), checkpoint_every (0), max_train_entries (0: all),
max_test_entries (0: all), max_new_tokens (256), seed (123), device.
Writes DIR/checkpoint/, DIR/metrics.jsonl, DIR/loss.svg, DIR/model/ (LoRA merged in)
and DIR/test-responses.json (the test split with the model's responses).
Exit status: 0 done, 1 error, 130 stopped by Ctrl-C (a checkpoint was saved).")]
pub struct InstructArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    train: TrainFlags,
    /// Continue the run in DIR from its checkpoint, with its saved settings
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Stop (with a checkpoint) once this global step is done, counted from 1
    #[arg(long, value_name = "STEP")]
    stop_at_step: Option<usize>,
}

fn instruct(args: InstructArgs) -> Result<ExitCode> {
    let mut files = Vec::new();
    let mut flags = args.train.flags(if args.resume.is_some() {
        "--resume"
    } else {
        "--out"
    });
    if let Some(dir) = &args.resume {
        files.push(RunDir::new(dir).resume_config("finetune instruct")?);
        flags.push(flag!(
            "--resume",
            "out_dir",
            Some(dir.display().to_string())
        ));
    }
    let mut s = config::settings(&args.common, &files, flags)?;
    let base: String = s.try_get("base_model", "gpt2-medium (355M)".to_string())?;
    let run = RunDir::new(s.try_get("out_dir", "runs/instruct".to_string())?);
    let data: String = s.try_get("data", "instruction-data.json".to_string())?;
    let style: PromptStyle = s.try_get("prompt_style", PromptStyle::Alpaca)?;
    let mask_instructions = s.try_get("mask_instructions", false)?;
    let lora_rank = s.try_get("lora_rank", 0i64)?;
    let lora_alpha = s.try_get("lora_alpha", 16.0f64)?;
    let learning_rate = s.try_get("learning_rate", 5e-5f64)?;
    let weight_decay = s.try_get("weight_decay", 0.1f64)?;
    let num_epochs = s.try_get("num_epochs", 2usize)?;
    let batch_size = s.try_get("batch_size", 8usize)?;
    let eval_freq = s.try_get("eval_freq", 5usize)?;
    let eval_iter = s.try_get("eval_iter", 5usize)?;
    let checkpoint_every = s.try_get("checkpoint_every", 0usize)?;
    let max_train_entries = s.try_get("max_train_entries", 0usize)?;
    let max_test_entries = s.try_get("max_test_entries", 0usize)?;
    let max_new_tokens = s.try_get("max_new_tokens", 256i64)?;
    let seed = s.try_get("seed", 123i64)?;
    let device = config::device(&mut s)?;
    config::check_unread(&s, "finetune instruct")?;
    config::print(&s);
    let source = crate::models::ModelSource::find(&base)?;
    println!("base model: {source}, {:?}", source.config()?);
    if args.common.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if args.resume.is_none() {
        run.start(
            &config::to_toml(&s, "finetune instruct"),
            "finetune instruct",
        )?;
    }

    let path = if std::path::Path::new(&data).is_file() {
        PathBuf::from(&data)
    } else {
        llm_core::data::path(&data)?
    };
    let entries = load_instruction_data(&path)?;
    let split = split_data(&entries, None);
    let (mut train_data, val_data, mut test_data) =
        (split.train_data, split.val_data, split.test_data);
    if max_train_entries > 0 {
        train_data.truncate(max_train_entries);
    }
    if max_test_entries > 0 {
        test_data.truncate(max_test_entries);
    }
    println!(
        "{}: {} training, {} validation, {} test entries",
        path.display(),
        train_data.len(),
        val_data.len(),
        test_data.len()
    );

    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let (mut vs, mut model, _) = crate::models::load_gpt(&base, device)?;
    let collate = CollateOptions {
        allowed_max_length: Some(model.cfg.context_length.min(1024) as usize),
        mask_instructions,
        device,
        ..CollateOptions::default()
    };
    tch::manual_seed(seed);
    let train_loader = InstructionDataset::new(&train_data, &tokenizer, style)?
        .try_into_loader(batch_size, true, true, collate)?;
    let val_loader = InstructionDataset::new(&val_data, &tokenizer, style)?
        .try_into_loader(batch_size, false, false, collate)?;
    if lora_rank > 0 {
        for p in model.parameters() {
            let _ = p.set_requires_grad(false);
        }
        let replaced = llm_core::finetune::lora::replace_linear_with_lora(
            &vs,
            &mut model,
            lora_rank,
            lora_alpha,
            llm_core::finetune::lora::LoraTargets::all(),
        )?;
        println!("LoRA rank {lora_rank}, alpha {lora_alpha}: {replaced} layers");
    }
    tch::manual_seed(seed);
    let mut optimizer = AdamW::new(
        named_parameters(&vs, &model.parameters()),
        learning_rate,
        weight_decay,
    );
    let resume = match &args.resume {
        Some(_) => {
            let info = llm_core::train::checkpoint::load_training_checkpoint(
                run.checkpoint(),
                &mut vs,
                &mut optimizer,
            )?;
            println!("resuming {}: {}", run.checkpoint().display(), info.history);
            run.trim_metrics(info.history.global_step)?;
            Some(info.history)
        }
        None => None,
    };
    let start_context = style.format_input(&val_data[0]);
    let log =
        |h: &llm_core::train::history::TrainHistory| run.log_evaluation(h, Some(learning_rate));
    run::handle_ctrl_c();
    let opts = TrainOptions {
        num_epochs,
        eval_freq,
        eval_iter,
        start_context: &start_context,
        sample_tokens: 50,
        device,
        checkpoint: Some(Checkpointing {
            vs: &vs,
            dir: run.checkpoint(),
        }),
        checkpoint_every,
        resume,
        stop: Some(&run::STOP),
        stop_at_step: args.stop_at_step.unwrap_or(0),
        on_eval: Some(&log),
        ..TrainOptions::default()
    };
    let history = match train_model_simple(
        &model,
        &train_loader,
        &val_loader,
        &mut optimizer,
        &tokenizer,
        &opts,
    ) {
        Ok(h) => h,
        Err(TrainError::Stopped {
            global_step, saved, ..
        }) => {
            return Ok(run::stopped(
                global_step,
                saved.as_deref(),
                "finetune instruct",
                &run,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    println!("{history}");
    drop(opts);
    if lora_rank > 0 {
        let merged = llm_core::finetune::lora::merge_lora(&vs, &mut model);
        println!("merged LoRA into {merged} layers");
    }
    llm_core::model::gpt2_weights::export_gpt2(&model, run.model())
        .with_context(|| format!("{}: exporting the fine-tuned model", run.model().display()))?;
    println!("model: {}", run.model().display());
    generate_responses(
        &model,
        &tokenizer,
        &mut test_data,
        style,
        max_new_tokens,
        model.cfg.context_length,
        device,
    )?;
    let responses = run.dir.join("test-responses.json");
    save_instruction_data(&responses, &test_data)?;
    if let Some(scores) = llm_core::eval::metrics::ResponseScores::of_entries(&test_data) {
        println!(
            "test set: {} responses, exact match {:.1}%, ROUGE-L F1 {:.3} ({})",
            scores.n,
            scores.exact_match * 100.0,
            scores.rouge_l_f1,
            responses.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
