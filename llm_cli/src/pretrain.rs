//! `llm pretrain`: chapter 5's training loop (or appendix D's, with warm-up,
//! cosine decay and clipping) on text files or on shards from `llm tokenize`,
//! with checkpoints every N steps and on Ctrl-C, and exact resumes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_core::distributed::ProcessGroup;
use llm_core::tch::{self, nn};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::loader::DataLoader;
use llm_core::text::shards::{ShardLoader, TokenShard};
use llm_core::text::tokenizer::Gpt2Tokenizer;
use llm_core::train::pretrain::{
    train_model, train_model_simple, Checkpointing, LrSchedule, TrainError, TrainOptions,
};
use llm_core::train::speed::SpeedOptions;

use crate::config::{self, flag, Common};
use crate::corpus;
use crate::run::{self, RunDir};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm pretrain tinyshakespeare.txt --out runs/shakespeare \\
      -s context_length=128 -s emb_dim=192 -s n_heads=6 -s n_layers=4 \\
      --batch-size 8 --num-epochs 2 --learning-rate 1e-3 --eval-freq 50
  llm tokenize corpus/ --out data/corpus && llm pretrain data/corpus --config run.toml
  llm pretrain --resume runs/shakespeare              # after Ctrl-C or a crash
  llm pretrain --config run.toml --dry-run            # settings and model size only

Settings (TOML keys, --set, LLM_<NAME>): data, out_dir, model (gpt2-small, -medium,
-large, -xl), context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias,
vocab_size, batch_size, stride, val_fraction, num_epochs, schedule (cosine: appendix
D; constant: chapter 5), learning_rate (the peak), initial_lr, min_lr, warmup_steps
(0: a tenth of the steps), max_norm, weight_decay, eval_freq, eval_iter,
start_context, sample_tokens, sample_every, checkpoint_every, seed, device, threads,
and the speed options precision (fp32, bf16-mixed, bf16, bf16-master), fused_adamw,
native_layers, flash_attention, fused_qkv, pad_vocab_to, grad_accum_steps, tf32.

The run directory holds config.toml, checkpoint/, metrics.jsonl (one line per
evaluation), loss.svg and, at the end, model/ (Hugging Face layout).
Exit status: 0 done (or stopped by --stop-at-step), 1 error, 130 stopped by Ctrl-C.")]
pub struct PretrainArgs {
    #[command(flatten)]
    common: Common,
    /// Text files, directories of .txt files, or a directory made by `llm tokenize`
    #[arg(value_name = "DATA")]
    data: Vec<PathBuf>,
    /// The run directory [default: runs/pretrain]
    #[arg(short, long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its checkpoint, with its saved settings
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Stop (with a checkpoint) once this global step is done, counted from 1
    #[arg(long, value_name = "STEP")]
    stop_at_step: Option<usize>,
    #[arg(long)]
    num_epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// The (peak) learning rate
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    context_length: Option<i64>,
    #[arg(long)]
    eval_freq: Option<usize>,
    /// Save a checkpoint every N steps (0: after each epoch only)
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    #[arg(long)]
    seed: Option<i64>,
    /// auto, cpu, cuda or cuda:N
    #[arg(long)]
    device: Option<String>,
}

/// Everything a pretraining run reads, resolved before anything runs.
struct Plan {
    data: Vec<PathBuf>,
    run: RunDir,
    cfg: llm_core::model::gpt::GptConfig,
    batch_size: usize,
    stride: usize,
    val_fraction: f64,
    num_epochs: usize,
    schedule: String,
    learning_rate: f64,
    initial_lr: f64,
    min_lr: f64,
    warmup_steps: usize,
    max_norm: f64,
    weight_decay: f64,
    eval_freq: usize,
    eval_iter: usize,
    start_context: String,
    sample_tokens: i64,
    sample_every: usize,
    checkpoint_every: usize,
    seed: i64,
    device: tch::Device,
    threads: usize,
    speed: SpeedOptions,
    ddp_timeout: f64,
}

fn plan(args: &PretrainArgs) -> Result<(Plan, llm_core::Settings)> {
    let mut files = Vec::new();
    if let Some(dir) = &args.resume {
        files.push(RunDir::new(dir).resume_config("pretrain")?);
    }
    // absolute, so that `--resume` finds the data from any directory
    let data = (!args.data.is_empty()).then(|| {
        args.data
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    let out = args
        .out
        .as_ref()
        .or(args.resume.as_ref())
        .map(|p| p.display().to_string());
    let mut s = config::settings(
        &args.common,
        &files,
        vec![
            flag!("DATA", "data", data),
            flag!(
                if args.resume.is_some() {
                    "--resume"
                } else {
                    "--out"
                },
                "out_dir",
                out
            ),
            flag!("--num-epochs", "num_epochs", args.num_epochs),
            flag!("--batch-size", "batch_size", args.batch_size),
            flag!("--learning-rate", "learning_rate", args.learning_rate),
            flag!("--context-length", "context_length", args.context_length),
            flag!("--eval-freq", "eval_freq", args.eval_freq),
            flag!(
                "--checkpoint-every",
                "checkpoint_every",
                args.checkpoint_every
            ),
            flag!("--seed", "seed", args.seed),
            flag!("--device", "device", args.device),
        ],
    )?;
    let data: String = s.try_get("data", String::new())?;
    let data: Vec<PathBuf> = data
        .split(',')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let run = RunDir::new(s.try_get("out_dir", "runs/pretrain".to_string())?);
    // chapter 5's GPT_CONFIG_124M: GPT-2 small with a context of 256
    let cfg = crate::models::gpt_config(&mut s, 256)?;
    let batch_size = s.try_get("batch_size", 2usize)?;
    let stride = s.try_get("stride", cfg.context_length as usize)?;
    let val_fraction = s.try_get("val_fraction", 0.1f64)?;
    let num_epochs = s.try_get("num_epochs", 10usize)?;
    let schedule: String = s.try_get("schedule", "cosine".to_string())?;
    if schedule != "cosine" && schedule != "constant" {
        bail!("setting `schedule` = {schedule:?}; accepted: cosine (appendix D: warm-up, cosine decay, clipping) or constant (chapter 5)");
    }
    let learning_rate = s.try_get("learning_rate", 4e-4f64)?;
    let (initial_lr, min_lr, warmup_steps, max_norm) = if schedule == "cosine" {
        (
            s.try_get("initial_lr", 1e-5f64)?,
            s.try_get("min_lr", learning_rate / 10.0)?,
            s.try_get("warmup_steps", 0usize)?,
            s.try_get("max_norm", 1.0f64)?,
        )
    } else {
        (learning_rate, learning_rate, 0, 0.0)
    };
    let plan = Plan {
        data,
        run,
        cfg,
        batch_size,
        stride,
        val_fraction,
        num_epochs,
        schedule,
        learning_rate,
        initial_lr,
        min_lr,
        warmup_steps,
        max_norm,
        weight_decay: s.try_get("weight_decay", 0.1f64)?,
        eval_freq: s.try_get("eval_freq", 5usize)?,
        eval_iter: s.try_get("eval_iter", 5usize)?,
        start_context: s.try_get("start_context", "Every effort moves you".to_string())?,
        sample_tokens: s.try_get("sample_tokens", 50i64)?,
        sample_every: s.try_get("sample_every", 0usize)?,
        checkpoint_every: s.try_get("checkpoint_every", 0usize)?,
        seed: s.try_get("seed", 123i64)?,
        device: config::device(&mut s)?,
        threads: s.try_get("threads", 0usize)?,
        speed: SpeedOptions::from_settings(&mut s, SpeedOptions::book())?,
        ddp_timeout: s.try_get("ddp_timeout", 300.0f64)?,
    };
    config::check_unread(&s, "pretrain")?;
    if let Some(missing) = plan.data.iter().find(|p| !p.exists()) {
        bail!("{}: no such file or directory", missing.display());
    }
    Ok((plan, s))
}

/// A training or validation loader of either kind.
type Loader = Box<dyn DataLoader>;

/// The training and validation loaders: from shards (a directory with
/// `train.bin`) memory-mapped, or from text tokenized now.
fn loaders(
    p: &Plan,
    tokenizer: &Gpt2Tokenizer,
    pg: Option<&ProcessGroup>,
) -> Result<(Loader, Loader, String)> {
    // data parallel: each rank trains on its shard of every epoch
    let (rank, world) = pg.map_or((0, 1), |pg| (pg.rank(), pg.world_size()));
    let ctx = p.cfg.context_length as usize;
    if let [dir] = p.data.as_slice() {
        if dir.join("train.bin").is_file() {
            let open = |name: &str| -> Result<Arc<TokenShard>> {
                Ok(Arc::new(TokenShard::open(dir.join(name))?))
            };
            let (train, val) = (open("train.bin")?, open("val.bin")?);
            let about = format!(
                "{}: {} training and {} validation tokens (memory-mapped)",
                dir.display(),
                train.len(),
                val.len()
            );
            let mut train =
                ShardLoader::new(train.clone(), 0..train.len(), ctx, p.stride, p.batch_size)?
                    .shuffle(true)
                    .drop_last(true);
            if pg.is_some() {
                train = train.distributed(rank, world, p.seed as u64);
            }
            let val = ShardLoader::new(val.clone(), 0..val.len(), ctx, p.stride, p.batch_size)?;
            return Ok((Box::new(train), Box::new(val), about));
        }
    }
    let files = corpus::input_files(&p.data)?;
    let (mut train_ids, mut val_ids) = (Vec::new(), Vec::new());
    corpus::for_each_file(
        &files,
        tokenizer,
        corpus::threads(p.threads),
        p.val_fraction,
        |_, t, v| {
            train_ids.extend_from_slice(t);
            val_ids.extend_from_slice(v);
            Ok(())
        },
    )?;
    let about = format!(
        "{} file(s): {} training and {} validation tokens",
        files.len(),
        train_ids.len(),
        val_ids.len()
    );
    let mut train = GptDatasetV1::from_ids(&train_ids, ctx, p.stride)
        .context("the training text")?
        .try_into_loader(p.batch_size, true, true)?;
    if pg.is_some() {
        train = train.distributed(rank, world, p.seed as u64);
    }
    let val = GptDatasetV1::from_ids(&val_ids, ctx, p.stride)
        .context("the validation text (its share is val_fraction)")?
        .try_into_loader(p.batch_size, false, false)?;
    Ok((Box::new(train), Box::new(val), about))
}

pub fn run(args: PretrainArgs) -> Result<ExitCode> {
    let (mut p, settings) = plan(&args)?;
    // launched by torchrun (or with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
    // one rank of data-parallel training
    let pg = if args.common.dry_run {
        None
    } else {
        ProcessGroup::from_env(Duration::from_secs_f64(p.ddp_timeout.max(1.0)))?
    };
    let main = pg.as_ref().is_none_or(|pg| pg.is_main());
    if let (Some(pg), tch::Device::Cuda(_)) = (&pg, p.device) {
        p.device = tch::Device::Cuda(pg.local_rank());
    }
    if !main {
        return train(&args, &p, pg.as_ref());
    }
    config::print(&settings);
    if let Some(pg) = &pg {
        println!(
            "data parallel: rank 0 of {} (Gloo), {} examples per rank and step",
            pg.world_size(),
            p.batch_size
        );
    }
    println!(
        "model: {} parameters ({} tied), {:?}",
        p.cfg.num_parameters(),
        p.cfg.num_parameters() - p.cfg.vocab_size * p.cfg.emb_dim,
        p.cfg
    );
    println!("speed options: {}", p.speed);
    if args.common.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if p.data.is_empty() {
        bail!("no data: give text files, directories or a tokenized directory (or set `data`)");
    }
    if args.resume.is_none() {
        p.run
            .start(&config::to_toml(&settings, "pretrain"), "pretrain")?;
    }
    train(&args, &p, pg.as_ref())
}

/// The run itself, on one process or on one rank (only rank 0 prints and
/// writes files).
fn train(args: &PretrainArgs, p: &Plan, pg: Option<&ProcessGroup>) -> Result<ExitCode> {
    let main = pg.is_none_or(|pg| pg.is_main());
    let run = &p.run;
    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let (train_loader, val_loader, about) = loaders(p, &tokenizer, pg)?;
    if main {
        println!(
            "data: {about}; {} training batches per epoch",
            train_loader.num_batches()
        );
    }

    tch::manual_seed(p.seed);
    let mut vs = nn::VarStore::new(p.device);
    let model = p.speed.build_model(&mut vs, &p.cfg)?;
    let mut optimizer = p
        .speed
        .optimizer(&vs, &model, p.learning_rate, p.weight_decay);
    let resume = match &args.resume {
        Some(_) => {
            let info = llm_core::train::checkpoint::load_training_checkpoint(
                run.checkpoint(),
                &mut vs,
                &mut optimizer,
            )?;
            if main {
                println!("resuming {}: {}", run.checkpoint().display(), info.history);
                run.trim_metrics(info.history.global_step)?;
            }
            Some(info.history)
        }
        None => None,
    };

    let accum = p.speed.grad_accum_steps.max(1);
    let total_steps = train_loader.num_batches().div_ceil(accum) * p.num_epochs;
    let warmup_steps = if p.warmup_steps > 0 {
        p.warmup_steps
    } else {
        total_steps / 10
    };
    let schedule = LrSchedule {
        initial_lr: p.initial_lr,
        peak_lr: p.learning_rate,
        min_lr: p.min_lr,
        warmup_steps,
        total_steps,
        max_norm: Some(p.max_norm),
    };
    let log = |h: &llm_core::train::history::TrainHistory| {
        let lr = (p.schedule == "constant").then_some(p.learning_rate);
        run.log_evaluation(h, lr)
    };
    run::handle_ctrl_c();
    let opts = TrainOptions {
        num_epochs: p.num_epochs,
        eval_freq: p.eval_freq,
        eval_iter: p.eval_iter,
        start_context: &p.start_context,
        sample_tokens: p.sample_tokens,
        sample_every: p.sample_every,
        device: p.device,
        grad_accum_steps: accum,
        checkpoint: Some(Checkpointing {
            vs: &vs,
            dir: run.checkpoint(),
        }),
        checkpoint_every: p.checkpoint_every,
        resume,
        stop: Some(&run::STOP),
        stop_at_step: args.stop_at_step.unwrap_or(0),
        on_eval: Some(&log),
        distributed: pg,
        quiet: false,
    };
    let result = if p.schedule == "cosine" {
        train_model(
            &model,
            &*train_loader,
            &*val_loader,
            &mut optimizer,
            &tokenizer,
            &opts,
            &schedule,
        )
    } else {
        train_model_simple(
            &model,
            &*train_loader,
            &*val_loader,
            &mut optimizer,
            &tokenizer,
            &opts,
        )
    };
    let history = match result {
        Ok(h) => h,
        Err(TrainError::Stopped { .. }) if !main => return Ok(run::stopped_quietly()),
        Err(TrainError::Stopped {
            global_step, saved, ..
        }) => return Ok(run::stopped(global_step, saved.as_deref(), "pretrain", run)),
        Err(e) => return Err(e.into()),
    };
    if !main {
        return Ok(ExitCode::SUCCESS);
    }
    println!("{history}");
    match pg {
        Some(pg) => {
            let (seconds, n) = pg.all_reduce_seconds();
            let steps = (history.global_step + 1) as f64;
            println!(
                "{:.0} tokens/s over {} rank(s); {:.1} ms per step (evaluations included), of which {:.1} ms gradient all-reduce ({n} all-reduces)",
                history.tokens_per_second() * pg.world_size() as f64,
                pg.world_size(),
                1000.0 * history.train_seconds / steps.max(1.0),
                1000.0 * seconds
            );
        }
        None => println!("{:.0} tokens/s", history.tokens_per_second()),
    }
    match llm_core::model::gpt2_weights::export_gpt2(&model, run.model()) {
        Ok(()) => println!("model: {} (Hugging Face layout)", run.model().display()),
        Err(e) => {
            eprintln!("warning: the final model was not exported ({e}); the checkpoint has it")
        }
    }
    println!(
        "checkpoint: {}\nmetrics: {}\nloss plot: {}",
        run.checkpoint().display(),
        run.metrics().display(),
        run.loss_svg().display()
    );
    Ok(ExitCode::SUCCESS)
}
