//! `llm download`, `llm export` and `llm tokenize`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use llm_core::text::shards::ShardWriter;
use llm_core::text::tokenizer::Gpt2Tokenizer;

use crate::corpus;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm download                         # list what can be downloaded, and what is here
  llm download tinyshakespeare.txt instruction-data.json
  llm download gpt2-small              # OpenAI's GPT-2 124M (498 MB)
  llm download Qwen/Qwen3-0.6B         # an open-weight model from Hugging Face

Files go to the cache (~/.cache/llm-rs, or LLM_CACHE_DIR) unless LLM_DATA_DIR
has them already; every download is checked against its sha256.")]
pub struct DownloadArgs {
    /// Data file names, GPT-2 names (gpt2-small, ...) or Hugging Face repositories (Qwen/Qwen3-0.6B)
    names: Vec<String>,
}

pub fn download(args: DownloadArgs) -> Result<ExitCode> {
    if args.names.is_empty() {
        println!("data files (llm download NAME):");
        let store = llm_core::data::DataStore::from_env();
        for f in llm_core::data::FILES {
            let here = store
                .local_dir
                .as_ref()
                .map(|d| d.join(f.name))
                .filter(|p| p.is_file())
                .or_else(|| Some(store.cache_dir.join(f.name)).filter(|p| p.is_file()));
            println!(
                "  {:<45} {:>10} bytes  {}",
                f.name,
                f.bytes,
                here.map_or("-".to_string(), |p| p.display().to_string())
            );
        }
        println!("models: {}", llm_core::model::gpt::MODEL_NAMES.join(", "));
        println!(
            "open-weight models: {}",
            llm_core::data::OPEN_MODEL_REPOS.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    for name in &args.names {
        let path = if llm_core::data::find(name).is_ok() {
            llm_core::data::path(name)?
        } else if let Ok(crate::models::ModelSource::Gpt2(full)) =
            crate::models::ModelSource::find(name)
        {
            llm_core::data::gpt2_weights_dir(&full)?
        } else if name.contains('/') {
            llm_core::data::open_model_dir(name)?
        } else {
            bail!(
                "{name:?}: not a data file, GPT-2 model or Hugging Face repository (run `llm download` for the list)"
            );
        };
        println!("{name}: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm export --model runs/shakespeare --out exported/shakespeare-gpt
  llm export --model runs/shakespeare/checkpoint --out exported/step-500

The directory loads in Hugging Face transformers (GPT2LMHeadModel.from_pretrained)
and in every llm subcommand (--model DIR).")]
pub struct ExportArgs {
    /// A run directory, a training checkpoint, or a GPT-2 name
    #[arg(short, long)]
    model: String,
    /// Where to write config.json and model.safetensors
    #[arg(short, long)]
    out: PathBuf,
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let (_vs, model, source) = crate::models::load_gpt(&args.model, llm_core::tch::Device::Cpu)?;
    llm_core::model::gpt2_weights::export_gpt2(&model, &args.out)?;
    println!(
        "{source} -> {} ({} parameters)",
        args.out.display(),
        model.num_parameters()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm tokenize tinyshakespeare.txt --out data/shakespeare
  llm tokenize books/ --out data/books --val-fraction 0.05 --threads 8
  llm pretrain data/books --out runs/books

Writes OUT/train.bin and OUT/val.bin (GPT-2 ids as little-endian uint16, nanoGPT's
format) and OUT/meta.json. Each file's last val_fraction of tokens goes to val.bin;
with several files each ends with <|endoftext|>. Files are read one at a time, so
the corpus may be bigger than memory (each file must fit).")]
pub struct TokenizeArgs {
    /// Text files or directories of .txt files
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The output directory
    #[arg(short, long)]
    out: PathBuf,
    /// The share of each file's tokens that goes to val.bin
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Worker threads (0: every core)
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn tokenize(args: TokenizeArgs) -> Result<ExitCode> {
    let files = corpus::input_files(&args.inputs)?;
    let tokenizer = Gpt2Tokenizer::gpt2()?;
    let threads = corpus::threads(args.threads);
    std::fs::create_dir_all(&args.out)?;
    let mut train = ShardWriter::create(args.out.join("train.bin"))?;
    let mut val = ShardWriter::create(args.out.join("val.bin"))?;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut sources = Vec::new();
    corpus::for_each_file(
        &files,
        &tokenizer,
        threads,
        args.val_fraction,
        |path, t, v| {
            train.push(t)?;
            val.push(v)?;
            let size = std::fs::metadata(path)?.len();
            bytes += size;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{}: {} tokens ({} train, {} val) | total {:.1} MB at {:.1} MB/s",
                path.display(),
                t.len() + v.len(),
                t.len(),
                v.len(),
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / seconds.max(1e-9)
            );
            sources.push(serde_json::json!({"file": path.display().to_string(), "bytes": size, "tokens": t.len() + v.len()}));
            Ok(())
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let (n_train, n_val) = (train.finish()?, val.finish()?);
    let meta = serde_json::json!({
        "format": "uint16 little-endian token ids (nanoGPT train.bin)",
        "tokenizer": "gpt2",
        "vocab_size": 50257,
        "train_tokens": n_train,
        "val_tokens": n_val,
        "val_fraction": args.val_fraction,
        "sources": sources,
    });
    llm_core::files::write_bytes(
        args.out.join("meta.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    println!(
        "{}: {n_train} training and {n_val} validation tokens from {} file(s), {:.1} MB in {:.2} s ({:.1} MB/s on {threads} threads)",
        args.out.display(),
        files.len(),
        bytes as f64 / 1e6,
        seconds,
        bytes as f64 / 1e6 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
