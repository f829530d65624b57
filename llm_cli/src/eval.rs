//! `llm eval`: loss and perplexity of a GPT on text (chapter 5), the spam
//! classifier's accuracy (chapter 6), and instruction responses scored by
//! ROUGE-L or an Ollama judge (chapter 7).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use llm_core::finetune::classifier::{calc_accuracy_loader, prepare_for_classification, Trainable};
use llm_core::finetune::spam::{SpamDataset, PAD_TOKEN_ID};
use llm_core::model::gpt::GptModel;
use llm_core::tch::{nn, Device};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::tokenizer::Gpt2Tokenizer;
use llm_core::train::loss::{calc_loss_loader, perplexity};

use crate::finetune::ClassifierInfo;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  llm eval --model runs/shakespeare --text tinyshakespeare.txt
  llm eval --classifier runs/spam
  llm eval --responses runs/instruct/test-responses.json
  llm eval --responses runs/instruct/test-responses.json --judge llama3

--text: mean loss and perplexity over windows of the model's context (stride = the
context). --classifier: accuracy on the book's training, validation and test splits.
--responses: exact match and ROUGE-L F1 of `model_response` against `output` in a
JSON list (as `llm finetune instruct` writes), and with --judge the scores (0-100)
of a model served by Ollama.")]
#[command(group(clap::ArgGroup::new("what").required(true).args(["text", "classifier", "responses"])))]
pub struct EvalArgs {
    /// The GPT to evaluate on --text: a run directory, checkpoint, export or GPT-2 name
    #[arg(short, long, requires = "text")]
    model: Option<String>,
    /// Text files (or directories of .txt files) for the loss and perplexity
    #[arg(long, num_args = 1..)]
    text: Vec<PathBuf>,
    /// A run directory of `llm finetune classify`
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// A JSON file of instruction entries with `model_response`
    #[arg(long)]
    responses: Option<PathBuf>,
    /// Also score the responses with this Ollama model (e.g. llama3)
    #[arg(long, requires = "responses")]
    judge: Option<String>,
    #[arg(long, default_value = llm_core::eval::ollama::DEFAULT_URL)]
    ollama_url: String,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    llm_core::settings::init_cuda();
    let device = llm_core::settings::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    if !args.text.is_empty() {
        let spec = args
            .model
            .clone()
            .unwrap_or_else(|| "gpt2-small".to_string());
        let (_vs, model, source) = crate::models::load_gpt(&spec, device)?;
        let tokenizer = Gpt2Tokenizer::gpt2()?;
        let files = crate::corpus::input_files(&args.text)?;
        let ctx = model.cfg.context_length as usize;
        println!("{source}: context {ctx}");
        let mut ids = Vec::new();
        crate::corpus::for_each_file(
            &files,
            &tokenizer,
            crate::corpus::threads(0),
            0.0,
            |path, t, _| {
                println!("{}: {} tokens", path.display(), t.len());
                ids.extend_from_slice(t);
                Ok(())
            },
        )?;
        let loader = GptDatasetV1::from_ids(&ids, ctx, ctx)?.try_into_loader(
            args.batch_size,
            false,
            false,
        )?;
        let loss = calc_loss_loader(&loader, &model, device, None);
        println!(
            "loss {loss:.4}, perplexity {:.2} over {} windows of {ctx} tokens",
            perplexity(loss),
            ids.len().saturating_sub(1) / ctx
        );
    }
    if let Some(dir) = &args.classifier {
        let info_path = dir.join("classifier.json");
        let text = std::fs::read_to_string(&info_path).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (not a run directory of `llm finetune classify`)",
                info_path.display()
            )
        })?;
        let info: ClassifierInfo = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", info_path.display()))?;
        let mut vs = nn::VarStore::new(device);
        let mut model = GptModel::new(vs.root(), &info.config)?;
        prepare_for_classification(&vs, &mut model, info.num_classes, Trainable::All);
        llm_core::files::load_varstore(&mut vs, dir.join("classifier.safetensors"))?;
        let tokenizer = Gpt2Tokenizer::gpt2()?;
        let splits = crate::finetune::spam_splits()?;
        for (name, df) in ["training", "validation", "test"].iter().zip(&splits) {
            let ds = SpamDataset::new(df, &tokenizer, Some(info.max_length), PAD_TOKEN_ID)?;
            let loader = ds.try_into_loader(args.batch_size, false, false)?;
            let acc = calc_accuracy_loader(&loader, &model, device, None);
            println!(
                "{name} accuracy: {:.2}% ({} messages)",
                acc * 100.0,
                df.len()
            );
        }
    }
    if let Some(path) = &args.responses {
        let entries = llm_core::finetune::instruct::load_instruction_data(path)?;
        let Some(scores) = llm_core::eval::metrics::ResponseScores::of_entries(&entries) else {
            bail!(
                "{}: an entry has no `model_response` (generate them with `llm finetune instruct`)",
                path.display()
            );
        };
        println!(
            "{}: {} responses, exact match {:.1}%, ROUGE-L F1 {:.3}",
            path.display(),
            scores.n,
            scores.exact_match * 100.0,
            scores.rouge_l_f1
        );
        if let Some(judge_model) = &args.judge {
            let judge =
                llm_core::eval::ollama::OllamaJudge::new(judge_model).with_url(&args.ollama_url);
            let report = judge.generate_model_scores(&entries, false)?;
            println!("{report}");
        }
    }
    let _ = Device::Cpu;
    Ok(ExitCode::SUCCESS)
}
