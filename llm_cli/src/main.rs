//! `llm`: the command-line tool of llm-from-scratch-rs, for runs that belong
//! in a terminal (hours of pretraining under `nohup` or a scheduler,
//! resumable after a crash) rather than in a notebook. Every subcommand is a
//! thin layer over `llm_core`, the library the notebooks use.
//!
//! Settings have the notebooks' names (`learning_rate`, `num_epochs`, …)
//! and come, highest first, from flags, `LLM_<NAME>` variables, a TOML file
//! (`--config`), and the book's defaults; `--dry-run` prints them.

mod config;
mod corpus;
mod dpo;
mod eval;
mod finetune;
mod generate;
mod launch;
mod models;
mod pretrain;
mod run;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train, fine-tune, align, run and evaluate the book's GPT (and Llama 3 /
/// Qwen3) from a terminal.
#[derive(Parser, Debug)]
#[command(name = "llm", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Settings use the notebooks' names and come, highest first, from flags
(`-s name=value` sets any of them), LLM_<NAME> environment variables, a
TOML file (--config), and the book's defaults. `--dry-run` prints them.

Examples:
  llm download tinyshakespeare.txt
  llm tokenize tinyshakespeare.txt --out data/shakespeare
  llm pretrain data/shakespeare --out runs/shakespeare -s emb_dim=192 -s n_layers=4
  llm pretrain --resume runs/shakespeare
  llm generate --model runs/shakespeare \"ROMEO:\" --temperature 0.8 --top-k 40";

#[derive(Subcommand, Debug)]
enum Command {
    /// Pretrain a GPT on text files or pre-tokenized shards (chapter 5, appendix D)
    Pretrain(pretrain::PretrainArgs),
    /// Fine-tune a GPT: a spam classifier (chapter 6) or an instruction model (chapter 7, LoRA)
    #[command(subcommand)]
    Finetune(finetune::FinetuneCommand),
    /// Align an instruction model with preference data (DPO, chapter 7 bonus)
    Dpo(dpo::DpoArgs),
    /// Generate text after a prompt, streamed as it is made
    Generate(generate::GenerateArgs),
    /// Chat with an instruction model, Qwen3 or Llama 3 (a REPL with history)
    Chat(generate::ChatArgs),
    /// Evaluate: loss and perplexity on text, spam accuracy, ROUGE-L or a judge on responses
    Eval(eval::EvalArgs),
    /// Download the project's data files and models (with progress, verified)
    Download(tools::DownloadArgs),
    /// Export a GPT in the Hugging Face layout (config.json, model.safetensors)
    Export(tools::ExportArgs),
    /// Tokenize text into uint16 shards (nanoGPT's train.bin / val.bin) on every core
    Tokenize(tools::TokenizeArgs),
    /// Start N ranks of data-parallel training on this machine (as torchrun --standalone)
    Launch(launch::LaunchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pretrain(a) => pretrain::run(a),
        Command::Finetune(c) => finetune::run(c),
        Command::Dpo(a) => dpo::run(a),
        Command::Generate(a) => generate::run_generate(a),
        Command::Chat(a) => generate::run_chat(a),
        Command::Eval(a) => eval::run(a),
        Command::Download(a) => tools::download(a),
        Command::Export(a) => tools::export(a),
        Command::Tokenize(a) => tools::tokenize(a),
        Command::Launch(a) => launch::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // one line: the error and its causes
            let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = String::new();
            for c in causes {
                if !line.contains(&c) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&c);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
