//! Llama 3.2 and Qwen3 (the book's bonus `ch05/07_gpt_to_llama` and
//! `ch05/11_qwen3`): the GPT of chapter 4 with the changes open-weight
//! models made since GPT-2, one per module:
//!
//! | GPT-2 (chapter 4) | Llama 3 and Qwen3 | module |
//! |---|---|---|
//! | `LayerNorm` (scale and shift) | [`RmsNorm`] (scale only) | [`crate::model::rms_norm`] |
//! | learned absolute positions `pos_emb` | rotary positions in every attention layer | [`crate::model::rope`] |
//! | GELU feed-forward (`fc1`, `fc2`) | SwiGLU (`fc1`, `fc2`, `fc3`) | [`crate::model::swiglu`] |
//! | multi-head attention with biases | grouped-query attention, no biases (Qwen3: RMS norm on queries and keys) | [`crate::model::gqa`] |
//! | dropout | none | |
//!
//! The two families differ only in their settings (Qwen3's `qk_norm` and
//! explicit `head_dim`, Llama 3's RoPE frequency scaling), so one model,
//! [`OpenModel`], serves both; [`Llama3Model`] and [`Qwen3Model`] are the
//! book's names for it. [`OpenModelConfig`] holds the book's settings
//! (`emb_dim`, `n_kv_groups`, `rope_base`, …) and reads a Hugging Face
//! `config.json` ([`OpenModelConfig::from_hf_config`]); weights come from
//! [`crate::model::hf_weights`].
//!
//! ```
//! use llm_core::model::open_model::{OpenModel, OpenModelConfig};
//! use llm_core::tch::{nn, nn::ModuleT, Device, Tensor};
//!
//! // Qwen3 0.6B's architecture, shrunk
//! let cfg = OpenModelConfig { vocab_size: 100, context_length: 64, emb_dim: 32, n_heads: 4,
//!                             n_layers: 2, hidden_dim: 64, head_dim: Some(16), n_kv_groups: 2,
//!                             ..OpenModelConfig::qwen3_0_6b() };
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = OpenModel::new(vs.root(), &cfg)?;
//! let logits = model.forward_t(&Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0), false);
//! assert_eq!(logits.size(), [1, 3, 100]);
//! println!("{model}");
//! # Ok::<(), llm_core::model::gpt::ModelError>(())
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::path::Path as FsPath;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::nn::{Module, ModuleT, Path};
use tch::{Device, Kind, Tensor};

use crate::display::thousands;
use crate::model::gpt::{check_cache_step, check_token_ids, LanguageModel, ModelError};
use crate::model::gqa::GroupedQueryAttention;
use crate::model::init::{self, Embedding};
use crate::model::kv_cache::KvCache;
use crate::model::linear::Linear;
use crate::model::rms_norm::RmsNorm;
use crate::model::rope::{compute_rope_params, rope_rows, RopeScaling};
use crate::model::swiglu::FeedForward;

/// Which open-weight family a configuration describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Meta's Llama 3 (Hugging Face `model_type: "llama"`).
    Llama3,
    /// Alibaba's Qwen3 (`model_type: "qwen3"`).
    Qwen3,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Llama3 => "Llama 3",
            Family::Qwen3 => "Qwen3",
        })
    }
}

/// The book's configuration of a Llama 3 or Qwen3 model (`LLAMA32_CONFIG_1B`,
/// `QWEN_CONFIG_06_B`, …), with the book's keys.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpenModelConfig {
    pub family: Family,
    pub vocab_size: i64,
    /// The longest context the model was trained for (RoPE's tables cover it).
    pub context_length: i64,
    pub emb_dim: i64,
    pub n_heads: i64,
    pub n_layers: i64,
    /// The SwiGLU feed-forward's inner size.
    pub hidden_dim: i64,
    /// The size of each attention head (`None`: `emb_dim / n_heads`).
    pub head_dim: Option<i64>,
    /// Qwen3's RMS norm of queries and keys.
    pub qk_norm: bool,
    /// Key/value heads of grouped-query attention.
    pub n_kv_groups: i64,
    /// RoPE's θ base.
    pub rope_base: f64,
    /// Llama 3's RoPE frequency scaling.
    pub rope_freq: Option<RopeScaling>,
    /// The RMS norms' epsilon (Llama 1e-5, Qwen3 1e-6).
    pub norm_eps: f64,
    /// The output head shares the token embedding's weights.
    pub tie_embeddings: bool,
}

/// The book's model names, for [`OpenModelConfig::by_name`].
pub const OPEN_MODEL_NAMES: [&str; 6] = [
    "Llama-3.2-1B",
    "Llama-3.2-3B",
    "Qwen3-0.6B",
    "Qwen3-1.7B",
    "Qwen3-4B",
    "Qwen3-8B",
];

impl OpenModelConfig {
    /// The book's `LLAMA32_CONFIG_1B`.
    pub fn llama3_2_1b() -> Self {
        OpenModelConfig {
            family: Family::Llama3,
            vocab_size: 128_256,
            context_length: 131_072,
            emb_dim: 2048,
            n_heads: 32,
            n_layers: 16,
            hidden_dim: 8192,
            head_dim: None,
            qk_norm: false,
            n_kv_groups: 8,
            rope_base: 500_000.0,
            rope_freq: Some(RopeScaling::llama3()),
            norm_eps: 1e-5,
            tie_embeddings: true,
        }
    }

    /// The book's `LLAMA32_CONFIG_3B`.
    pub fn llama3_2_3b() -> Self {
        OpenModelConfig {
            emb_dim: 3072,
            n_heads: 24,
            n_layers: 28,
            ..Self::llama3_2_1b()
        }
    }

    /// The book's `QWEN_CONFIG_06_B` (Qwen3 0.6B).
    pub fn qwen3_0_6b() -> Self {
        OpenModelConfig {
            family: Family::Qwen3,
            vocab_size: 151_936,
            context_length: 40_960,
            emb_dim: 1024,
            n_heads: 16,
            n_layers: 28,
            hidden_dim: 3072,
            head_dim: Some(128),
            qk_norm: true,
            n_kv_groups: 8,
            rope_base: 1_000_000.0,
            rope_freq: None,
            norm_eps: 1e-6,
            tie_embeddings: true,
        }
    }

    /// The book's `QWEN3_CONFIG_1_7B`.
    pub fn qwen3_1_7b() -> Self {
        OpenModelConfig {
            emb_dim: 2048,
            hidden_dim: 6144,
            ..Self::qwen3_0_6b()
        }
    }

    /// The book's `QWEN3_CONFIG_4B`.
    pub fn qwen3_4b() -> Self {
        OpenModelConfig {
            emb_dim: 2560,
            n_heads: 32,
            n_layers: 36,
            hidden_dim: 9728,
            ..Self::qwen3_0_6b()
        }
    }

    /// The book's `QWEN3_CONFIG_8B` (its output head is not tied).
    pub fn qwen3_8b() -> Self {
        OpenModelConfig {
            emb_dim: 4096,
            n_heads: 32,
            n_layers: 36,
            hidden_dim: 12288,
            tie_embeddings: false,
            ..Self::qwen3_0_6b()
        }
    }

    /// A preset by the book's name ([`OPEN_MODEL_NAMES`]; the Hugging Face
    /// repository names such as `"Qwen/Qwen3-0.6B"` work too).
    pub fn by_name(name: &str) -> Result<Self, ModelError> {
        let short = name.rsplit('/').next().unwrap_or(name);
        let short = short
            .trim_end_matches("-Instruct")
            .trim_end_matches("-Base");
        Ok(match short {
            "Llama-3.2-1B" => Self::llama3_2_1b(),
            "Llama-3.2-3B" => Self::llama3_2_3b(),
            "Qwen3-0.6B" => Self::qwen3_0_6b(),
            "Qwen3-1.7B" => Self::qwen3_1_7b(),
            "Qwen3-4B" => Self::qwen3_4b(),
            "Qwen3-8B" => Self::qwen3_8b(),
            _ => {
                return Err(ModelError::UnknownModel {
                    name: name.to_string(),
                    known: OPEN_MODEL_NAMES.join(", "),
                })
            }
        })
    }

    /// The size of each attention head.
    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.emb_dim / self.n_heads.max(1))
    }

    /// The number of distinct parameters a model of this configuration
    /// has (a tied head counts once), without building it.
    pub fn num_parameters(&self) -> i64 {
        let (e, h, kv, hd) = (
            self.emb_dim,
            self.n_heads,
            self.n_kv_groups,
            self.head_dim(),
        );
        let attention = e * h * hd * 2 + e * kv * hd * 2 + if self.qk_norm { 2 * hd } else { 0 };
        let block = attention + 3 * e * self.hidden_dim + 2 * e;
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * e
        };
        self.vocab_size * e + self.n_layers * block + e + head
    }

    /// Check every size against what the model can be built with.
    pub fn check(&self) -> Result<(), ModelError> {
        let positive: [(&'static str, i64); 7] = [
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
            ("emb_dim", self.emb_dim),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("hidden_dim", self.hidden_dim),
            ("n_kv_groups", self.n_kv_groups),
        ];
        for (field, value) in positive {
            if value < 1 {
                return Err(config_err(field, value, "a positive integer"));
            }
        }
        if self.n_heads % self.n_kv_groups != 0 {
            return Err(config_err(
                "n_kv_groups",
                self.n_kv_groups,
                "a divisor of n_heads (each key/value head serves the same number of query heads)",
            ));
        }
        match self.head_dim {
            Some(h) if h < 2 || h % 2 != 0 => {
                return Err(config_err(
                    "head_dim",
                    h,
                    "an even positive integer (RoPE rotates pairs)",
                ))
            }
            None if self.emb_dim % self.n_heads != 0 || (self.emb_dim / self.n_heads) % 2 != 0 => {
                return Err(config_err(
                    "emb_dim",
                    self.emb_dim,
                    "a multiple of n_heads with an even quotient (or set head_dim)",
                ))
            }
            _ => {}
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            return Err(config_err(
                "rope_base",
                self.rope_base,
                "a finite number above 1",
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(config_err(
                "norm_eps",
                self.norm_eps,
                "a small positive number",
            ));
        }
        Ok(())
    }

    /// The configuration a Hugging Face `config.json` describes (the text
    /// of the file; `path` only names it in errors). Llama
    /// (`model_type: "llama"`) and Qwen3 (`"qwen3"`) are understood, in the
    /// layout of the hub's files and in the one transformers 5 writes
    /// (`rope_parameters`). Anything this model cannot represent — another
    /// `model_type`, an activation other than SiLU, biases, sliding-window
    /// attention, another RoPE scaling — is an error naming the key.
    pub fn from_hf_config(text: &str, path: &FsPath) -> Result<Self, HfConfigError> {
        let json: Value = serde_json::from_str(text).map_err(|e| HfConfigError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let err = |key: &str, message: String| HfConfigError::Key {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let get = |key: &str| json.get(key).filter(|v| !v.is_null());
        let int = |key: &str| -> Result<i64, HfConfigError> {
            get(key)
                .ok_or_else(|| err(key, "missing".into()))?
                .as_i64()
                .ok_or_else(|| err(key, format!("expected an integer, got {}", json[key])))
        };
        let float = |v: &Value, key: &str| -> Result<f64, HfConfigError> {
            v.as_f64()
                .ok_or_else(|| err(key, format!("expected a number, got {v}")))
        };
        let family = match get("model_type").and_then(Value::as_str) {
            Some("llama") => Family::Llama3,
            Some("qwen3") => Family::Qwen3,
            Some(other) => {
                return Err(err(
                    "model_type",
                    format!(
                        "{other:?} is not supported; accepted: \"llama\" (Llama 3) or \"qwen3\""
                    ),
                ))
            }
            None => return Err(err("model_type", "missing".into())),
        };
        if let Some(act) = get("hidden_act")
            .and_then(Value::as_str)
            .filter(|a| *a != "silu")
        {
            return Err(err(
                "hidden_act",
                format!("{act:?}: only \"silu\" (SwiGLU) is supported"),
            ));
        }
        for key in ["attention_bias", "mlp_bias", "use_sliding_window"] {
            if get(key).and_then(Value::as_bool) == Some(true) {
                return Err(err(
                    key,
                    "true is not supported (these models have none)".into(),
                ));
            }
        }
        // RoPE: the hub's `rope_theta` + `rope_scaling`, or transformers 5's `rope_parameters`
        let rope = get("rope_parameters").or_else(|| get("rope_scaling"));
        let rope_key = if get("rope_parameters").is_some() {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        let rope_base = match get("rope_theta") {
            Some(v) => float(v, "rope_theta")?,
            None => match rope.and_then(|r| r.get("rope_theta")) {
                Some(v) => float(v, "rope_parameters.rope_theta")?,
                None => return Err(err("rope_theta", "missing".into())),
            },
        };
        let rope_freq = match rope {
            None => None,
            Some(r) => {
                let kind = r
                    .get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                match kind {
                    "default" => None,
                    "llama3" => {
                        let field = |k: &str| -> Result<f64, HfConfigError> {
                            let key = format!("{rope_key}.{k}");
                            float(r.get(k).ok_or_else(|| err(&key, "missing".into()))?, &key)
                        };
                        Some(RopeScaling {
                            factor: field("factor")?,
                            low_freq_factor: field("low_freq_factor")?,
                            high_freq_factor: field("high_freq_factor")?,
                            original_context_length: field("original_max_position_embeddings")?,
                        })
                    }
                    other => {
                        return Err(err(
                            &format!("{rope_key}.rope_type"),
                            format!("{other:?} is not supported; accepted: \"llama3\" or none"),
                        ))
                    }
                }
            }
        };
        let n_heads = int("num_attention_heads")?;
        let cfg = OpenModelConfig {
            family,
            vocab_size: int("vocab_size")?,
            context_length: int("max_position_embeddings")?,
            emb_dim: int("hidden_size")?,
            n_heads,
            n_layers: int("num_hidden_layers")?,
            hidden_dim: int("intermediate_size")?,
            head_dim: match get("head_dim") {
                Some(_) => Some(int("head_dim")?),
                None => None,
            },
            qk_norm: family == Family::Qwen3,
            n_kv_groups: match get("num_key_value_heads") {
                Some(_) => int("num_key_value_heads")?,
                None => n_heads,
            },
            rope_base,
            rope_freq,
            norm_eps: match get("rms_norm_eps") {
                Some(v) => float(v, "rms_norm_eps")?,
                None => return Err(err("rms_norm_eps", "missing".into())),
            },
            tie_embeddings: get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        cfg.check().map_err(|e| err("(sizes)", e.to_string()))?;
        Ok(cfg)
    }
}

fn config_err(field: &'static str, value: impl fmt::Display, accepted: &'static str) -> ModelError {
    ModelError::Config {
        field,
        value: value.to_string(),
        accepted,
    }
}

/// A Hugging Face `config.json` this crate cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HfConfigError {
    #[error("{path}: not valid JSON: {message}")]
    Json {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{path}: key {key:?}: {message}")]
    Key {
        path: std::path::PathBuf,
        key: String,
        message: String,
    },
}

/// One transformer block: RMSNorm → grouped-query attention → shortcut,
/// RMSNorm → SwiGLU → shortcut (no dropout).
#[derive(Debug)]
pub struct TransformerBlock {
    pub att: GroupedQueryAttention,
    pub ff: FeedForward,
    pub norm1: RmsNorm,
    pub norm2: RmsNorm,
}

impl TransformerBlock {
    fn new(path: &Path, cfg: &OpenModelConfig) -> Self {
        TransformerBlock {
            att: GroupedQueryAttention::new(
                path / "att",
                cfg.emb_dim,
                cfg.n_heads,
                cfg.n_kv_groups,
                Some(cfg.head_dim()),
                cfg.qk_norm,
            ),
            ff: FeedForward::new(path / "ff", cfg.emb_dim, cfg.hidden_dim),
            norm1: RmsNorm::new(path / "norm1", cfg.emb_dim, cfg.norm_eps),
            norm2: RmsNorm::new(path / "norm2", cfg.emb_dim, cfg.norm_eps),
        }
    }

    /// The block with RoPE's rows at the tokens' positions, under `mask` (see
    /// [`GroupedQueryAttention::forward_at`]).
    pub fn forward_at(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let h = self.norm1.forward(x);
        let h = self.att.forward_at(&h, rope, mask, cache);
        let x = h + x;
        let h = self.ff.forward(&self.norm2.forward(&x));
        h + x
    }
}

/// Llama 3 or Qwen3 (see the [module docs](self)): token embedding, the
/// transformer blocks, a final RMSNorm and the output head (sharing the
/// embedding's weights when `tie_embeddings`). Input `[batch, tokens]`
/// int64 ids, output float32 logits `[batch, tokens, vocab_size]`.
#[derive(Debug)]
pub struct OpenModel {
    pub cfg: OpenModelConfig,
    pub tok_emb: Embedding,
    pub trf_blocks: Vec<TransformerBlock>,
    pub final_norm: RmsNorm,
    /// With `tie_embeddings`, the same tensor as `tok_emb.ws`.
    pub out_head: Linear,
    /// RoPE's tables (float32, on the model's device).
    pub cos: Tensor,
    pub sin: Tensor,
}

/// The book's name for [`OpenModel`] with a Llama 3 configuration.
pub type Llama3Model = OpenModel;
/// The book's name for [`OpenModel`] with a Qwen3 configuration.
pub type Qwen3Model = OpenModel;

impl OpenModel {
    /// Build the model under `path` (variables of the store's kind, e.g.
    /// bfloat16 after `vs.set_kind(Kind::BFloat16)`), initialised as
    /// PyTorch's layers are (random: load weights for a real model).
    pub fn new<'a, P: Borrow<Path<'a>>>(
        path: P,
        cfg: &OpenModelConfig,
    ) -> Result<Self, ModelError> {
        cfg.check()?;
        let p = path.borrow();
        let tok_emb = init::embedding(p / "tok_emb", cfg.vocab_size, cfg.emb_dim);
        let trf_blocks = (0..cfg.n_layers)
            .map(|i| TransformerBlock::new(&(p / "trf_blocks" / i), cfg))
            .collect();
        let final_norm = RmsNorm::new(p / "final_norm", cfg.emb_dim, cfg.norm_eps);
        let out_head = if cfg.tie_embeddings {
            Linear {
                ws: tok_emb.ws.shallow_clone(),
                bs: None,
                lora: None,
            }
        } else {
            Linear::new(p / "out_head", cfg.emb_dim, cfg.vocab_size, false)
        };
        let (cos, sin) = compute_rope_params(
            cfg.head_dim(),
            cfg.rope_base,
            cfg.context_length,
            cfg.rope_freq.as_ref(),
        );
        Ok(OpenModel {
            cfg: *cfg,
            tok_emb,
            trf_blocks,
            final_norm,
            out_head,
            cos: cos.to_device(p.device()),
            sin: sin.to_device(p.device()),
        })
    }

    /// The forward pass after checking the ids (as
    /// [`crate::model::gpt::GptModel::forward`]).
    pub fn forward(&self, idx: &Tensor) -> Result<Tensor, ModelError> {
        check_token_ids(idx, self.cfg.vocab_size, self.cfg.context_length)?;
        Ok(self.forward_t(idx, false))
    }

    /// The forward pass through a KV cache (see
    /// [`crate::model::gpt::GptModel::forward_with_cache`]): `idx` holds
    /// the new tokens only, `attention_mask` (`[batch, new]`, 0 for left
    /// padding) is for batches of prompts of different lengths.
    pub fn forward_with_cache(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let (batch, new) = check_cache_step(
            idx,
            cache,
            attention_mask,
            self.trf_blocks.len(),
            self.cfg.vocab_size,
            self.cfg.context_length,
        )?;
        let pad = attention_mask.map(|m| m.eq(0));
        let step = cache.begin_step(batch, new, pad.as_ref(), idx.device())?;
        let mut x = self.tok_emb.forward(idx);
        let (cos, sin) = rope_rows(&self.cos, &self.sin, &step.positions);
        for (layer, block) in self.trf_blocks.iter().enumerate() {
            x = block.forward_at(&x, (&cos, &sin), Some(&step.mask), Some((cache, layer)));
        }
        cache.end_step(new);
        Ok(self.head(&x))
    }

    fn head(&self, x: &Tensor) -> Tensor {
        self.out_head
            .forward(&self.final_norm.forward(x))
            .to_kind(Kind::Float)
    }

    /// Every linear layer with its name (`trf_blocks.0.att.W_query`, …,
    /// `out_head`), for LoRA; a tied head is left out (it is the embedding).
    pub fn linear_layers_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, b) in self.trf_blocks.iter_mut().enumerate() {
            let att = &mut b.att;
            let ff = &mut b.ff;
            for (name, l) in [
                ("att.W_query", &mut att.w_query),
                ("att.W_key", &mut att.w_key),
                ("att.W_value", &mut att.w_value),
                ("att.out_proj", &mut att.out_proj),
                ("ff.fc1", &mut ff.fc1),
                ("ff.fc2", &mut ff.fc2),
                ("ff.fc3", &mut ff.fc3),
            ] {
                out.push((format!("trf_blocks.{i}.{name}"), l));
            }
        }
        if !self.cfg.tie_embeddings {
            out.push(("out_head".to_string(), &mut self.out_head));
        }
        out
    }

    /// The parameters, each tensor once (a tied head is the embedding).
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut p = vec![&self.tok_emb.ws];
        for b in &self.trf_blocks {
            let att = &b.att;
            p.extend(att.linear_layers().iter().map(|(_, l)| &l.ws));
            p.extend(att.q_norm.iter().chain(&att.k_norm).map(|n| &n.scale));
            p.extend([&b.ff.fc1.ws, &b.ff.fc2.ws, &b.ff.fc3.ws]);
            p.extend([&b.norm1.scale, &b.norm2.scale]);
        }
        p.push(&self.final_norm.scale);
        if !self.cfg.tie_embeddings {
            p.push(&self.out_head.ws);
        }
        p
    }

    /// The number of distinct parameters (the book's "unique parameters":
    /// a tied head counts once).
    pub fn num_parameters(&self) -> i64 {
        self.parameters().iter().map(|t| t.numel() as i64).sum()
    }

    /// The number of parameters counting the output head separately even
    /// when tied (the book's "Total number of parameters").
    pub fn num_parameters_untied(&self) -> i64 {
        let head = if self.cfg.tie_embeddings {
            self.out_head.ws.numel() as i64
        } else {
            0
        };
        self.num_parameters() + head
    }

    /// Bytes the weights take in `kind` (e.g. `Kind::BFloat16`: 2 per
    /// parameter), whatever kind they are held in now.
    pub fn memory_bytes(&self, kind: Kind) -> i64 {
        self.num_parameters() * kind.elt_size_in_bytes() as i64
    }

    /// Where the weights are.
    pub fn device(&self) -> Device {
        self.tok_emb.ws.device()
    }

    /// The weights' dtype.
    pub fn kind(&self) -> Kind {
        self.tok_emb.ws.kind()
    }
}

impl ModuleT for OpenModel {
    /// Logits for `idx` (`[batch, tokens]`) at positions `0..tokens`,
    /// causal. Evaluation and training are the same (no dropout).
    fn forward_t(&self, idx: &Tensor, _train: bool) -> Tensor {
        let tokens = idx.size()[1];
        let positions = Tensor::arange(tokens, (Kind::Int64, idx.device())).unsqueeze(0);
        let mut x = self.tok_emb.forward(idx);
        let (cos, sin) = rope_rows(&self.cos, &self.sin, &positions);
        for block in &self.trf_blocks {
            x = block.forward_at(&x, (&cos, &sin), None, None);
        }
        self.head(&x)
    }
}

impl LanguageModel for OpenModel {
    fn context_length(&self) -> i64 {
        self.cfg.context_length
    }
    fn vocab_size(&self) -> i64 {
        self.cfg.vocab_size
    }
    fn n_layers(&self) -> usize {
        self.trf_blocks.len()
    }
    fn device(&self) -> Device {
        OpenModel::device(self)
    }
    fn forward_with_cache(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        OpenModel::forward_with_cache(self, idx, cache, attention_mask)
    }
}

impl fmt::Display for OpenModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cfg;
        writeln!(
            f,
            "{} model: {} layers, {} dims, {} query heads sharing {} key/value heads of {}, SwiGLU {}, vocabulary {}, context {}{}",
            c.family,
            c.n_layers,
            c.emb_dim,
            c.n_heads,
            c.n_kv_groups,
            c.head_dim(),
            c.hidden_dim,
            c.vocab_size,
            c.context_length,
            if c.qk_norm { ", QK-norm" } else { "" }
        )?;
        if c.tie_embeddings {
            writeln!(
                f,
                "  parameters: {} ({} counting the tied output head apart from the embedding, as the book's total)",
                thousands(self.num_parameters()),
                thousands(self.num_parameters_untied()),
            )?;
        } else {
            writeln!(f, "  parameters: {}", thousands(self.num_parameters()))?;
        }
        let size = |kind: Kind| {
            let bytes = self.memory_bytes(kind) as f64;
            if bytes >= 1e9 {
                format!("{:.2} GB", bytes / 1e9)
            } else {
                format!("{:.2} MB", bytes / 1e6)
            }
        };
        write!(
            f,
            "  weights: {} in float32, {} in bfloat16; held as {} on {:?}",
            size(Kind::Float),
            size(Kind::BFloat16),
            crate::files::dtype_name(self.kind()),
            self.device()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn book_parameter_counts() {
        let _rng = crate::rng_lock();
        // the book's notebooks: Qwen3 0.6B 596,049,920 unique parameters
        // (751,632,384 with the tied head counted), Llama 3.2 1B 1,235,814,400
        // (1,498,482,688)
        assert_eq!(OpenModelConfig::qwen3_0_6b().num_parameters(), 596_049_920);
        assert_eq!(
            OpenModelConfig::llama3_2_1b().num_parameters(),
            1_235_814_400
        );
        // the formula counts what the model holds
        for cfg in [
            OpenModelConfig::qwen3_0_6b(),
            OpenModelConfig::llama3_2_1b(),
        ] {
            let cfg = OpenModelConfig {
                vocab_size: 50,
                emb_dim: 32,
                n_layers: 2,
                hidden_dim: 48,
                head_dim: cfg.head_dim.map(|_| 16),
                n_heads: 4,
                n_kv_groups: 2,
                context_length: 16,
                tie_embeddings: false,
                ..cfg
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let model = OpenModel::new(vs.root(), &cfg).unwrap();
            assert_eq!(model.num_parameters(), cfg.num_parameters());
            let stored: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
            assert_eq!(stored, cfg.num_parameters());
        }
    }

    #[test]
    fn hub_config_errors_name_the_key() {
        let _rng = crate::rng_lock();
        let path = FsPath::new("config.json");
        let text = r#"{"model_type": "mistral"}"#;
        let e = OpenModelConfig::from_hf_config(text, path).unwrap_err();
        assert!(e.to_string().contains("\"model_type\""), "{e}");
        let text = r#"{"model_type": "llama", "hidden_act": "gelu"}"#;
        let e = OpenModelConfig::from_hf_config(text, path).unwrap_err();
        assert!(e.to_string().contains("hidden_act"), "{e}");
    }
}
