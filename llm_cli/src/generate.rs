//! `llm generate` (a prompt to text, streamed) and `llm chat` (a REPL).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_core::finetune::instruct::{InstructionEntry, PromptStyle};
use llm_core::model::chat::Chat;
use llm_core::model::generate::{generate_stream, GenerationConfig};
use llm_core::model::gpt::LanguageModel;
use llm_core::model::kv_cache::KvCache;
use llm_core::model::open_model::{Family, OpenModel};
use llm_core::tch::{self, Device, Kind};
use llm_core::text::tokenizer::qwen_llama::{ChatFormat, Llama3Tokenizer, Qwen3Tokenizer};
use llm_core::text::tokenizer::{Gpt2Tokenizer, Tokenizer};

use crate::config::{self, flag, Common};

/// The sampling flags `generate` and `chat` share.
#[derive(Args, Debug, Clone)]
pub struct Sampling {
    /// A run directory, checkpoint, export, GPT-2 name, or a Qwen3 / Llama 3 repository or directory
    #[arg(short, long)]
    model: Option<String>,
    #[arg(long)]
    max_new_tokens: Option<i64>,
    /// 0: greedy (the book's default); above: sample
    #[arg(short, long)]
    temperature: Option<f64>,
    /// Sample from the k most likely tokens only
    #[arg(long)]
    top_k: Option<i64>,
    /// Sample from the most likely tokens that make up probability p (nucleus)
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    seed: Option<i64>,
    #[arg(long)]
    device: Option<String>,
}

impl Sampling {
    fn flags(&self) -> Vec<config::Flag> {
        vec![
            flag!("--model", "model", self.model),
            flag!("--max-new-tokens", "max_new_tokens", self.max_new_tokens),
            flag!("--temperature", "temperature", self.temperature),
            flag!("--top-k", "top_k", self.top_k),
            flag!("--top-p", "top_p", self.top_p),
            flag!("--seed", "seed", self.seed),
            flag!("--device", "device", self.device),
        ]
    }
}

/// The model to generate with, and its tokenizer.
enum Loaded {
    Gpt(llm_core::model::gpt::GptModel, Gpt2Tokenizer, String),
    Open(OpenModel, OpenTokenizer, String),
}

enum OpenTokenizer {
    Qwen3(Qwen3Tokenizer),
    Llama3(Llama3Tokenizer),
}

/// A directory (or Hugging Face repository) of a Llama 3 or Qwen3 model.
fn open_model_dir(spec: &str) -> Option<Result<PathBuf>> {
    let path = Path::new(spec);
    let config = path.join("config.json");
    if config.is_file() {
        let text = std::fs::read_to_string(&config).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let ty = json["model_type"].as_str().unwrap_or("");
        return (ty == "qwen3" || ty == "llama").then(|| Ok(path.to_path_buf()));
    }
    (!path.exists() && spec.contains('/') && !spec.starts_with('.'))
        .then(|| llm_core::data::open_model_dir(spec).map_err(Into::into))
}

fn load(spec: &str, device: Device) -> Result<(Loaded, llm_core::tch::nn::VarStore)> {
    if let Some(dir) = open_model_dir(spec) {
        let dir = dir?;
        let (vs, model) = llm_core::model::hf_weights::load_open_model(&dir, device, Kind::Float)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = match model.cfg.family {
            Family::Qwen3 => {
                OpenTokenizer::Qwen3(Qwen3Tokenizer::from_file(&tok_path, Some(spec))?)
            }
            Family::Llama3 => OpenTokenizer::Llama3(Llama3Tokenizer::from_file(&tok_path)?),
        };
        let about = format!(
            "{} ({:?}, {} parameters)",
            dir.display(),
            model.cfg.family,
            model.num_parameters()
        );
        return Ok((Loaded::Open(model, tokenizer, about), vs));
    }
    let (vs, model, source) = crate::models::load_gpt(spec, device)?;
    let about = format!("{source} ({} parameters)", model.num_parameters());
    Ok((Loaded::Gpt(model, Gpt2Tokenizer::gpt2()?, about), vs))
}

/// Read the sampling settings.
fn generation(s: &mut llm_core::Settings, max_new_tokens: i64) -> Result<GenerationConfig> {
    let max_new_tokens = s.try_get("max_new_tokens", max_new_tokens)?;
    let temperature = s.try_get("temperature", 0.0f64)?;
    let top_k = s.try_get("top_k", 0i64)?;
    let top_p = s.try_get("top_p", 1.0f64)?;
    if top_k < 0 {
        bail!("setting `top_k` = {top_k}; accepted: 0 (off) or more");
    }
    Ok(GenerationConfig {
        max_new_tokens,
        temperature,
        top_k: (top_k > 0).then_some(top_k),
        top_p: (top_p < 1.0).then_some(top_p),
        ..GenerationConfig::default()
    })
}

/// Print text as ids arrive: decode everything so far and print what is new,
/// holding back a piece that ends inside a character (a byte-level BPE
/// token can be part of one).
struct Printer {
    ids: Vec<u32>,
    shown: usize,
}

impl Printer {
    fn push<T: Tokenizer + ?Sized>(&mut self, tokenizer: &T, id: i64) {
        self.ids.push(id as u32);
        if let Ok(text) = tokenizer.decode(&self.ids) {
            if !text.ends_with('\u{FFFD}') && text.len() > self.shown {
                print!("{}", &text[self.shown..]);
                let _ = std::io::stdout().flush();
                self.shown = text.len();
            }
        }
    }
}

fn stream<M: LanguageModel + ?Sized, T: Tokenizer + ?Sized>(
    model: &M,
    tokenizer: &T,
    prompt: &[i64],
    settings: &GenerationConfig,
) -> Result<Vec<i64>> {
    let mut cache = KvCache::simple(model.n_layers());
    let mut printer = Printer {
        ids: Vec::new(),
        shown: 0,
    };
    let new = generate_stream(model, prompt, settings, &mut cache, |id| {
        printer.push(tokenizer, id)
    })?;
    Ok(new)
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm generate --model runs/shakespeare \"ROMEO:\" --temperature 0.8 --top-k 40
  llm generate --model gpt2-small \"Every effort moves you\" --max-new-tokens 25
  llm generate --model Qwen/Qwen3-0.6B \"Large language models are\"
  echo \"Once upon a time\" | llm generate --model runs/shakespeare

Settings: model, prompt, max_new_tokens (50), temperature (0: greedy), top_k (0: off),
top_p (1: off), stop_at_eos (true: stop at <|endoftext|>), seed (123), device.")]
pub struct GenerateArgs {
    #[command(flatten)]
    common: Common,
    /// The prompt (read from stdin when absent)
    prompt: Option<String>,
    #[command(flatten)]
    sampling: Sampling,
}

pub fn run_generate(args: GenerateArgs) -> Result<ExitCode> {
    let mut flags = args.sampling.flags();
    flags.push(flag!("PROMPT", "prompt", args.prompt));
    let mut s = config::settings(&args.common, &[], flags)?;
    let spec: String = s.try_get("model", "gpt2-small".to_string())?;
    let mut prompt: String = s.try_get("prompt", String::new())?;
    let mut gen = generation(&mut s, 50)?;
    let stop_at_eos = s.try_get("stop_at_eos", true)?;
    let seed = s.try_get("seed", 123i64)?;
    let device = config::device(&mut s)?;
    config::check_unread(&s, "generate")?;
    if args.common.dry_run {
        config::print(&s);
        return Ok(ExitCode::SUCCESS);
    }
    if prompt.is_empty() {
        std::io::stdin().read_line(&mut prompt)?;
        prompt = prompt.trim_end_matches('\n').to_string();
    }
    let (loaded, _vs) = load(&spec, device)?;
    tch::manual_seed(seed);
    let started = std::time::Instant::now();
    let new = match &loaded {
        Loaded::Gpt(model, tok, _) => {
            if stop_at_eos {
                gen.stop_ids = vec![crate::corpus::END_OF_TEXT as i64];
            }
            let ids: Vec<i64> = tok.encode(&prompt)?.into_iter().map(i64::from).collect();
            print!("{prompt}");
            stream(model, tok, &ids, &gen)?
        }
        Loaded::Open(model, tok, _) => {
            print!("{prompt}");
            match tok {
                OpenTokenizer::Qwen3(t) => {
                    let ids: Vec<i64> =
                        t.encode_text(&prompt)?.into_iter().map(i64::from).collect();
                    gen.vocab_limit = Some(t.vocab_size() as i64);
                    stream(model, t, &ids, &gen)?
                }
                OpenTokenizer::Llama3(t) => {
                    let ids: Vec<i64> = t.encode(&prompt)?.into_iter().map(i64::from).collect();
                    stream(model, t, &ids, &gen)?
                }
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    println!();
    let about = match &loaded {
        Loaded::Gpt(_, _, a) | Loaded::Open(_, _, a) => a,
    };
    eprintln!(
        "[{} tokens in {:.2} s, {:.1} tokens/s; {about}]",
        new.len(),
        seconds,
        new.len() as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm chat --model runs/instruct                 # a GPT fine-tuned by `llm finetune instruct`
  llm chat --model Qwen/Qwen3-0.6B --temperature 0.7 --top-p 0.9

Type a message and press Enter. /reset forgets the conversation, /exit (or Ctrl-D) ends.
A GPT instruction model sees the conversation as earlier Alpaca exchanges (cut from
the front to fit its context); Qwen3 and Llama 3 get their own chat formats.")]
pub struct ChatArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    sampling: Sampling,
    /// A system message (Qwen3 and Llama 3)
    #[arg(long)]
    system: Option<String>,
}

pub fn run_chat(args: ChatArgs) -> Result<ExitCode> {
    let mut flags = args.sampling.flags();
    flags.push(flag!("--system", "system", args.system));
    let mut s = config::settings(&args.common, &[], flags)?;
    let spec: String = s.try_get("model", "runs/instruct".to_string())?;
    let gen = generation(&mut s, 256)?;
    let system: String = s.try_get("system", String::new())?;
    let seed = s.try_get("seed", 123i64)?;
    let device = config::device(&mut s)?;
    config::check_unread(&s, "chat")?;
    if args.common.dry_run {
        config::print(&s);
        return Ok(ExitCode::SUCCESS);
    }
    let (loaded, _vs) = load(&spec, device)?;
    tch::manual_seed(seed);
    let about = match &loaded {
        Loaded::Gpt(_, _, a) | Loaded::Open(_, _, a) => a.clone(),
    };
    eprintln!("chatting with {about}; /reset forgets, /exit ends");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let prompt = |lines: &mut std::io::Lines<std::io::StdinLock>| -> Result<Option<String>> {
        print!("> ");
        std::io::stdout().flush()?;
        Ok(lines.next().transpose()?)
    };
    match &loaded {
        Loaded::Gpt(model, tok, _) => {
            let style = PromptStyle::Alpaca;
            let mut history = String::new();
            while let Some(line) = prompt(&mut lines)? {
                match line.trim() {
                    "" => continue,
                    "/exit" | "/quit" => break,
                    "/reset" => {
                        history.clear();
                        println!("(conversation forgotten)");
                        continue;
                    }
                    _ => {}
                }
                let entry = InstructionEntry::new(line.trim(), "", "");
                let turn = style.format_input(&entry) + &style.format_response(&entry);
                let text = if history.is_empty() {
                    turn
                } else {
                    format!("{history}\n\n{turn}")
                };
                let mut ids: Vec<i64> = tok.encode(&text)?.into_iter().map(i64::from).collect();
                let room = (model.cfg.context_length - gen.max_new_tokens).max(1) as usize;
                if ids.len() > room {
                    ids.drain(..ids.len() - room);
                }
                let gen = GenerationConfig {
                    stop_ids: vec![crate::corpus::END_OF_TEXT as i64],
                    ..gen.clone()
                };
                let new = stream(model, tok, &ids, &gen)?;
                println!();
                let answer = tok.decode(&new.iter().map(|&i| i as u32).collect::<Vec<_>>())?;
                history = text + &answer;
            }
        }
        Loaded::Open(model, tok, _) => {
            let mut chat = match tok {
                OpenTokenizer::Qwen3(t) => Chat::qwen3(model, t.clone()),
                OpenTokenizer::Llama3(t) => Chat::llama3(model, ChatFormat::new(t.clone())),
            };
            let stop_ids = chat.settings.stop_ids.clone();
            let vocab_limit = chat.settings.vocab_limit;
            chat.settings = GenerationConfig {
                stop_ids,
                vocab_limit,
                ..gen
            };
            if !system.is_empty() {
                chat.history.insert(
                    0,
                    llm_core::text::tokenizer::qwen_llama::ChatMessage::system(system),
                );
            }
            while let Some(line) = prompt(&mut lines)? {
                match line.trim() {
                    "" => continue,
                    "/exit" | "/quit" => break,
                    "/reset" => {
                        chat.clear();
                        println!("(conversation forgotten)");
                        continue;
                    }
                    _ => {}
                }
                let reply = chat
                    .send(line.trim(), |piece| {
                        print!("{piece}");
                        let _ = std::io::stdout().flush();
                    })
                    .context("generating the answer")?;
                println!();
                eprintln!(
                    "[{} tokens, {:.1} tokens/s]",
                    reply.new_tokens,
                    reply.tokens_per_second()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
