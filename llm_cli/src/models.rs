//! Where a GPT comes from: a run of this tool, a training checkpoint, a
//! directory in the Hugging Face layout, or OpenAI's GPT-2 by name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use llm_core::model::gpt::{GptConfig, GptModel};
use llm_core::tch::{nn, Device};

/// Which files a model specification names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// `config.json` + `model.safetensors` (an `llm export`, a run's
    /// `model/`, or a Hugging Face GPT-2 directory).
    HfDir(PathBuf),
    /// A training checkpoint directory (`checkpoint.json`).
    Checkpoint(PathBuf),
    /// OpenAI's GPT-2 by the book's name (`gpt2-small (124M)`, or
    /// `gpt2-small`), from the data directory, the cache, or a download.
    Gpt2(String),
}

impl ModelSource {
    /// Resolve `spec`: a run directory (its `model/`, else its
    /// `checkpoint/`), a checkpoint, an HF directory, or a GPT-2 name.
    pub fn find(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            for (dir, file) in [
                (path.join("model"), "config.json"),
                (path.join("checkpoint"), "checkpoint.json"),
                (path.to_path_buf(), "checkpoint.json"),
                (path.to_path_buf(), "config.json"),
            ] {
                if dir.join(file).is_file() {
                    return Ok(if file == "config.json" {
                        ModelSource::HfDir(dir)
                    } else {
                        ModelSource::Checkpoint(dir)
                    });
                }
            }
            bail!(
                "{spec}: a directory without a model (no model/config.json, checkpoint/checkpoint.json, checkpoint.json or config.json)"
            );
        }
        let short = spec.split(" (").next().unwrap_or(spec);
        if GptConfig::by_name(short).is_ok() {
            let full = llm_core::data::GPT2_REPOS
                .iter()
                .find(|(name, _)| name.starts_with(short))
                .map_or(spec.to_string(), |(name, _)| name.to_string());
            return Ok(ModelSource::Gpt2(full));
        }
        bail!(
            "{spec}: no such directory, and not a GPT-2 name (accepted: {}, or a directory made by llm pretrain / finetune / export)",
            llm_core::model::gpt::MODEL_NAMES.join(", ")
        )
    }

    /// The model's configuration, without loading the weights.
    pub fn config(&self) -> Result<GptConfig> {
        Ok(match self {
            ModelSource::HfDir(dir) => {
                llm_core::model::gpt2_weights::read_config(dir.join("config.json"))?
            }
            ModelSource::Checkpoint(dir) => {
                llm_core::train::checkpoint::read_checkpoint_info(dir)?.config
            }
            ModelSource::Gpt2(name) => GptConfig {
                qkv_bias: true,
                ..GptConfig::by_name(name)?
            },
        })
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::HfDir(d) => write!(f, "{}", d.display()),
            ModelSource::Checkpoint(d) => write!(f, "the training checkpoint {}", d.display()),
            ModelSource::Gpt2(n) => write!(f, "OpenAI's {n}"),
        }
    }
}

/// Load the GPT that `spec` names onto `device` (see [`ModelSource::find`]).
pub fn load_gpt(spec: &str, device: Device) -> Result<(nn::VarStore, GptModel, ModelSource)> {
    let source = ModelSource::find(spec)?;
    let (vs, model) = match &source {
        ModelSource::HfDir(dir) => llm_core::model::gpt2_weights::load_gpt2(dir, device)?,
        ModelSource::Checkpoint(dir) => {
            let info = llm_core::train::checkpoint::read_checkpoint_info(dir)?;
            let mut vs = nn::VarStore::new(device);
            let model = GptModel::new(vs.root(), &info.config)?;
            llm_core::files::load_varstore(&mut vs, dir.join("model.safetensors")).with_context(
                || format!("{}: the weights do not fit a plain GPT (a LoRA or classifier checkpoint? use the run's model/ directory)", dir.display()),
            )?;
            (vs, model)
        }
        ModelSource::Gpt2(name) => {
            let dir = llm_core::data::gpt2_weights_dir(name)?;
            llm_core::model::gpt2_weights::load_gpt2(dir, device)?
        }
    };
    Ok((vs, model, source))
}

/// A GPT configuration from settings: a preset (`model`, the book's
/// GPT-2 sizes) whose fields each setting may change.
pub fn gpt_config(settings: &mut llm_core::Settings, context_length: i64) -> Result<GptConfig> {
    let name: String = settings.try_get("model", "gpt2-small".to_string())?;
    let base = GptConfig::by_name(&name).context("setting `model`")?;
    let cfg = GptConfig {
        vocab_size: settings.try_get("vocab_size", base.vocab_size)?,
        context_length: settings.try_get("context_length", context_length)?,
        emb_dim: settings.try_get("emb_dim", base.emb_dim)?,
        n_heads: settings.try_get("n_heads", base.n_heads)?,
        n_layers: settings.try_get("n_layers", base.n_layers)?,
        drop_rate: settings.try_get("drop_rate", base.drop_rate)?,
        qkv_bias: settings.try_get("qkv_bias", base.qkv_bias)?,
    };
    cfg.validate()?;
    Ok(cfg)
}
