//! Chapter 5.5: OpenAI's GPT-2 weights in a [`GptModel`], read from and
//! written to the Hugging Face layout (`config.json` + `model.safetensors`).
//!
//! The book loads OpenAI's TensorFlow checkpoint with `load_weights_into_gpt`;
//! here the same weights come from the Hugging Face copy, whose names follow
//! OpenAI's (`wte`, `wpe`, `h.{i}.attn.c_attn`, `h.{i}.mlp.c_fc`, `ln_f`, …).
//! The map, key by key (each `h.{i}` is `trf_blocks.{i}`):
//!
//! | Hugging Face (`transformer.` prefix optional) | shape | [`GptModel`] |
//! |---|---|---|
//! | `wte.weight` | `[V, E]` | `tok_emb.weight`, and `out_head.weight` (tied, copied) |
//! | `wpe.weight` | `[C, E]` | `pos_emb.weight` |
//! | `h.{i}.attn.c_attn.weight` | `[E, 3E]` | split in three along dim 1, each transposed: `att.W_query/W_key/W_value.weight` |
//! | `h.{i}.attn.c_attn.bias` | `[3E]` | split in three: `att.W_query/W_key/W_value.bias` |
//! | `h.{i}.attn.c_proj.weight` / `.bias` | `[E, E]` / `[E]` | `att.out_proj` (weight transposed) |
//! | `h.{i}.mlp.c_fc.weight` / `.bias` | `[E, 4E]` / `[4E]` | `ff.layers.0` (weight transposed) |
//! | `h.{i}.mlp.c_proj.weight` / `.bias` | `[4E, E]` / `[E]` | `ff.layers.2` (weight transposed) |
//! | `h.{i}.ln_1`, `h.{i}.ln_2`, `ln_f` `.weight` / `.bias` | `[E]` | `norm1`, `norm2`, `final_norm` `.scale` / `.shift` |
//! | `lm_head.weight` (optional) | `[V, E]` | ignored when equal to `wte.weight`, else `out_head.weight` |
//!
//! OpenAI's `Conv1D` layers store their weights as `[in, out]`, the
//! transpose of a `Linear` weight, hence the transposes. The attention
//! buffers `attn.bias` and `attn.masked_bias` that older checkpoints carry
//! are skipped. Any other key, a missing key or a shape that does not fit is
//! an error naming the file, the key and both shapes; nothing is copied
//! unless every tensor fits.
//!
//! GPT-2's activation, `gelu_new`, is the tanh approximation the book's
//! [`crate::model::gpt::gelu`] computes.
//!
//! ```no_run
//! use llm_core::model::gpt2_weights::load_gpt2;
//! use llm_core::model::gpt::generate_text_simple;
//! use llm_core::tch::{Device, Tensor};
//!
//! // a directory holding config.json and model.safetensors (e.g. openai-community/gpt2)
//! let (_vs, model) = load_gpt2("gpt2-hf", Device::Cpu)?;
//! let idx = Tensor::from_slice(&[6109i64, 3626, 6100, 345]).unsqueeze(0); // "Every effort moves you"
//! let out = generate_text_simple(&model, &idx, 10, model.cfg.context_length);
//! assert_eq!(out.size(), [1, 14]);
//! # Ok::<(), llm_core::model::gpt2_weights::Gpt2WeightsError>(())
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use crate::files::{self, io_err, FileError};
use crate::model::gpt::{GptConfig, GptModel, ModelError};
use crate::text::tokenizer::GPT2_END_OF_TEXT_ID;

/// The file holding the configuration in a Hugging Face model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The file holding the weights in a Hugging Face model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Errors from reading or writing GPT-2 weights; each names the file, and the
/// key and shapes where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Gpt2WeightsError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: config key {key:?}: {message}")]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Torch { path: PathBuf, message: String },
    #[error("{path}: missing tensor {key:?} (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
    },
    #[error("{path}: unexpected tensor {key:?} with shape {shape:?} (not part of a GPT-2 model with this config)")]
    UnexpectedTensor {
        path: PathBuf,
        key: String,
        shape: Vec<i64>,
    },
    #[error("{path}: tensor {key:?} has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("building the model: {0}")]
    Model(#[from] ModelError),
    /// Export of a model whose layers still carry LoRA updates.
    #[error("{layer} carries a LoRA update, which the GPT-2 layout has no place for; merge it into the weights first (finetune::lora::merge_lora)")]
    UnmergedLora { layer: String },
}

fn config_err(path: &Path, key: &str, message: impl Into<String>) -> Gpt2WeightsError {
    Gpt2WeightsError::Config {
        path: path.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
    }
}

/// The keys of a Hugging Face GPT-2 `config.json` that the book's model
/// reads (the others are ignored; a `null` counts as absent).
#[derive(Debug, Deserialize)]
struct HfGpt2Config {
    vocab_size: NonZeroU32,
    n_positions: NonZeroU32,
    n_embd: NonZeroU32,
    n_head: NonZeroU32,
    n_layer: NonZeroU32,
    #[serde(default)]
    activation_function: Option<String>,
    #[serde(default)]
    layer_norm_epsilon: Option<f64>,
    #[serde(default)]
    n_inner: Option<i64>,
}

/// A [`GptConfig`] from a Hugging Face GPT-2 `config.json` value: `n_embd` →
/// `emb_dim`, `n_layer` → `n_layers`, `n_head` → `n_heads`, `n_positions` →
/// `context_length`, `vocab_size`; `qkv_bias` is `true` (GPT-2 has query,
/// key and value biases) and `drop_rate` is 0 (set it afterwards to
/// fine-tune with dropout, as the book does). `path` only names the file in
/// errors.
///
/// Fails on a missing or non-integer key, an activation other than the tanh
/// GELU (`gelu_new`), a `layer_norm_epsilon` other than 1e-5 or an `n_inner`
/// other than `4 * n_embd`: the book's model could not reproduce those.
///
/// ```
/// use llm_core::model::gpt2_weights::config_from_hf;
/// use llm_core::serde_json::json;
///
/// let hf = json!({"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
///                 "vocab_size": 50257, "activation_function": "gelu_new"});
/// let cfg = config_from_hf(&hf, "config.json".as_ref())?;
/// assert_eq!((cfg.emb_dim, cfg.n_layers, cfg.context_length), (768, 12, 1024));
/// assert!(cfg.qkv_bias && cfg.drop_rate == 0.0);
/// # Ok::<(), llm_core::model::gpt2_weights::Gpt2WeightsError>(())
/// ```
pub fn config_from_hf(hf: &Value, path: &Path) -> Result<GptConfig, Gpt2WeightsError> {
    let hf: HfGpt2Config = serde_path_to_error::deserialize(hf).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        // a missing key has no path: serde names it in the message
        let key = match message.strip_prefix("missing field `") {
            Some(rest) if key == "." => rest.trim_end_matches('`').to_string(),
            _ => key,
        };
        config_err(path, &key, message)
    })?;
    let cfg = GptConfig {
        vocab_size: hf.vocab_size.get().into(),
        context_length: hf.n_positions.get().into(),
        emb_dim: hf.n_embd.get().into(),
        n_heads: hf.n_head.get().into(),
        n_layers: hf.n_layer.get().into(),
        drop_rate: 0.0,
        qkv_bias: true,
    };
    if cfg.emb_dim % cfg.n_heads != 0 {
        return Err(config_err(
            path,
            "n_head",
            format!(
                "{} does not divide n_embd = {} (each head gets n_embd / n_head dimensions)",
                cfg.n_heads, cfg.emb_dim
            ),
        ));
    }
    if let Some(act) = hf.activation_function {
        if !matches!(act.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return Err(config_err(
                path,
                "activation_function",
                format!("{act:?} is not the tanh GELU (\"gelu_new\") of the book's model"),
            ));
        }
    }
    if let Some(eps) = hf.layer_norm_epsilon {
        if (eps - 1e-5).abs() > 1e-12 {
            return Err(config_err(
                path,
                "layer_norm_epsilon",
                format!("{eps} differs from the book's 1e-5"),
            ));
        }
    }
    if let Some(inner) = hf.n_inner {
        if inner != 4 * cfg.emb_dim {
            return Err(config_err(
                path,
                "n_inner",
                format!("{inner} differs from 4 * n_embd = {}", 4 * cfg.emb_dim),
            ));
        }
    }
    Ok(cfg)
}

/// Read `config.json` (see [`config_from_hf`]).
pub fn read_config(path: impl AsRef<Path>) -> Result<GptConfig, Gpt2WeightsError> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let hf: Value = serde_json::from_str(crate::data::strip_bom(&text)).map_err(|source| {
        Gpt2WeightsError::Json {
            path: path.to_path_buf(),
            source,
        }
    })?;
    config_from_hf(&hf, path)
}

/// A Hugging Face GPT-2 `config.json` value for `cfg` (dropout rates from
/// `drop_rate`, `tie_word_embeddings` as given).
///
/// ```
/// use llm_core::model::gpt2_weights::{config_from_hf, config_to_hf};
/// use llm_core::model::gpt::GptConfig;
///
/// let cfg = GptConfig { qkv_bias: true, drop_rate: 0.0, ..GptConfig::gpt2_small() };
/// let hf = config_to_hf(&cfg, true);
/// assert_eq!(hf["n_embd"], 768);
/// assert_eq!(config_from_hf(&hf, "config.json".as_ref())?, cfg);
/// # Ok::<(), llm_core::model::gpt2_weights::Gpt2WeightsError>(())
/// ```
pub fn config_to_hf(cfg: &GptConfig, tie_word_embeddings: bool) -> Value {
    json!({
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": cfg.drop_rate,
        "bos_token_id": GPT2_END_OF_TEXT_ID,
        "embd_pdrop": cfg.drop_rate,
        "eos_token_id": GPT2_END_OF_TEXT_ID,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-5,
        "model_type": "gpt2",
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_inner": null,
        "n_layer": cfg.n_layers,
        "n_positions": cfg.context_length,
        "resid_pdrop": cfg.drop_rate,
        "scale_attn_weights": true,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": "float32",
        "vocab_size": cfg.vocab_size,
    })
}

/// How a Hugging Face tensor becomes one or more model tensors.
enum Map<'a> {
    /// copied as it is
    Same(&'a Tensor),
    /// a `Conv1D` weight `[in, out]` into a `Linear` weight `[out, in]`
    Transposed(&'a Tensor),
    /// `c_attn`: split in three along the last dimension (then transposed
    /// when a weight) into query, key, value
    Qkv([&'a Tensor; 3], bool),
}

impl Map<'_> {
    /// The shape the Hugging Face tensor must have.
    fn hf_shape(&self) -> Vec<i64> {
        match self {
            Map::Same(t) => t.size(),
            Map::Transposed(t) => t.size().into_iter().rev().collect(),
            Map::Qkv([q, ..], weight) => {
                let s = q.size();
                if *weight {
                    vec![s[1], 3 * s[0]]
                } else {
                    vec![3 * s[0]]
                }
            }
        }
    }

    /// `(destination, source)` pairs for a tensor of the right shape.
    fn pairs(&self, src: &Tensor) -> Vec<(Tensor, Tensor)> {
        match self {
            Map::Same(t) => vec![(t.shallow_clone(), src.shallow_clone())],
            Map::Transposed(t) => vec![(t.shallow_clone(), src.tr())],
            Map::Qkv(dst, weight) => src
                .chunk(3, -1)
                .into_iter()
                .zip(dst)
                .map(|(part, d)| (d.shallow_clone(), if *weight { part.tr() } else { part }))
                .collect(),
        }
    }
}

/// Every Hugging Face key (without the `transformer.` prefix) of `model`, in
/// the file's usual order, with where it goes. `qkv_bias` false gives no
/// `c_attn.bias` entry.
fn hf_map(model: &GptModel) -> Vec<(String, Map<'_>)> {
    let mut m = vec![
        ("wte.weight".to_string(), Map::Same(&model.tok_emb.ws)),
        ("wpe.weight".to_string(), Map::Same(&model.pos_emb.ws)),
    ];
    for (i, b) in model.trf_blocks.iter().enumerate() {
        let h = format!("h.{i}");
        let att = &b.att;
        m.push((format!("{h}.ln_1.weight"), Map::Same(&b.norm1.scale)));
        m.push((format!("{h}.ln_1.bias"), Map::Same(&b.norm1.shift)));
        m.push((
            format!("{h}.attn.c_attn.weight"),
            Map::Qkv([&att.w_query.ws, &att.w_key.ws, &att.w_value.ws], true),
        ));
        if let (Some(q), Some(k), Some(v)) = (&att.w_query.bs, &att.w_key.bs, &att.w_value.bs) {
            m.push((format!("{h}.attn.c_attn.bias"), Map::Qkv([q, k, v], false)));
        }
        m.push((
            format!("{h}.attn.c_proj.weight"),
            Map::Transposed(&att.out_proj.ws),
        ));
        if let Some(bs) = &att.out_proj.bs {
            m.push((format!("{h}.attn.c_proj.bias"), Map::Same(bs)));
        }
        m.push((format!("{h}.ln_2.weight"), Map::Same(&b.norm2.scale)));
        m.push((format!("{h}.ln_2.bias"), Map::Same(&b.norm2.shift)));
        let (fc, _, proj) = &b.ff.layers;
        m.push((format!("{h}.mlp.c_fc.weight"), Map::Transposed(&fc.ws)));
        if let Some(bs) = &fc.bs {
            m.push((format!("{h}.mlp.c_fc.bias"), Map::Same(bs)));
        }
        m.push((format!("{h}.mlp.c_proj.weight"), Map::Transposed(&proj.ws)));
        if let Some(bs) = &proj.bs {
            m.push((format!("{h}.mlp.c_proj.bias"), Map::Same(bs)));
        }
    }
    m.push((
        "ln_f.weight".to_string(),
        Map::Same(&model.final_norm.scale),
    ));
    m.push(("ln_f.bias".to_string(), Map::Same(&model.final_norm.shift)));
    m
}

/// True for the attention-mask buffers some GPT-2 checkpoints store.
fn is_buffer(key: &str) -> bool {
    key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

/// The book's `load_weights_into_gpt` for tensors in the Hugging Face GPT-2
/// layout (see the [module table](self)): check every tensor's presence and
/// shape first, then copy them into `model`'s variables under
/// [`tch::no_grad`] (onto the model's device and dtype). `out_head` gets a
/// copy of `wte` (OpenAI's GPT-2 ties them), or `lm_head.weight` when the
/// file has one that differs. `path` only names the source in errors.
///
/// The model must have `qkv_bias` (GPT-2's attention has biases), unless the
/// tensors have no `c_attn.bias` at all.
///
/// ```
/// use llm_core::model::gpt2_weights::{gpt2_tensors, load_weights_into_gpt};
/// use llm_core::model::gpt::{GptConfig, GptModel};
/// use llm_core::tch::{self, nn, Device};
///
/// let cfg = GptConfig { vocab_size: 20, context_length: 8, emb_dim: 8, n_heads: 2, n_layers: 1,
///                       qkv_bias: true, drop_rate: 0.0 };
/// let (vs_a, vs_b) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
/// tch::manual_seed(1);
/// let a = GptModel::new(vs_a.root(), &cfg)?;
/// let b = GptModel::new(vs_b.root(), &cfg)?;
/// load_weights_into_gpt(&b, gpt2_tensors(&a), "memory".as_ref())?;
/// assert!(b.trf_blocks[0].att.w_key.ws.equal(&a.trf_blocks[0].att.w_key.ws));
/// // a fresh model's head is not tied to wte, so `gpt2_tensors` adds `lm_head.weight`
/// assert!(b.out_head.ws.equal(&a.out_head.ws));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_weights_into_gpt(
    model: &GptModel,
    tensors: Vec<(String, Tensor)>,
    path: &Path,
) -> Result<(), Gpt2WeightsError> {
    let mut by_key: BTreeMap<String, Tensor> = BTreeMap::new();
    for (key, t) in tensors {
        let short = key.strip_prefix("transformer.").unwrap_or(&key).to_string();
        if !is_buffer(&short) {
            by_key.insert(short, t);
        }
    }
    let shape_err = |key: &str, expected: Vec<i64>, found: Vec<i64>| Gpt2WeightsError::Shape {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected,
        found,
    };
    let mut copies: Vec<(Tensor, Tensor)> = Vec::new();
    for (key, map) in hf_map(model) {
        let expected = map.hf_shape();
        let src = by_key
            .remove(&key)
            .ok_or_else(|| Gpt2WeightsError::MissingTensor {
                path: path.to_path_buf(),
                key: key.clone(),
                expected: expected.clone(),
            })?;
        if src.size() != expected {
            return Err(shape_err(&key, expected, src.size()));
        }
        copies.extend(map.pairs(&src));
    }
    // copies[0] is (tok_emb, the file's wte)
    let head = match by_key.remove("lm_head.weight") {
        None => copies[0].1.shallow_clone(),
        Some(lm) if lm.size() != model.out_head.ws.size() => {
            return Err(shape_err(
                "lm_head.weight",
                model.out_head.ws.size(),
                lm.size(),
            ))
        }
        Some(lm) => lm,
    };
    copies.push((model.out_head.ws.shallow_clone(), head));
    if let Some((key, t)) = by_key.into_iter().next() {
        return Err(Gpt2WeightsError::UnexpectedTensor {
            path: path.to_path_buf(),
            key,
            shape: t.size(),
        });
    }
    tch::no_grad(|| {
        for (mut dst, src) in copies {
            dst.f_copy_(&src).map_err(|e| Gpt2WeightsError::Torch {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    })
}

/// Read a `model.safetensors` in the Hugging Face GPT-2 layout into `model`
/// (see [`load_weights_into_gpt`]).
pub fn load_gpt2_safetensors(
    model: &GptModel,
    path: impl AsRef<Path>,
) -> Result<(), Gpt2WeightsError> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(io_err(path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such weights file",
        ))
        .into());
    }
    let tensors = files::read_tensors(path)?;
    load_weights_into_gpt(model, tensors, path)
}

/// Build a [`GptModel`] from a Hugging Face GPT-2 directory (`config.json`
/// and `model.safetensors`) on `device`: the configuration from
/// [`read_config`] (dropout 0), then the weights. Returns the `VarStore`
/// holding the variables (for an optimiser or [`crate::train::checkpoint`]) with
/// the model.
///
/// Building the model first draws its random initial weights, as the book's
/// `GPTModel(NEW_CONFIG)` does before `load_weights_into_gpt`, so it advances
/// libtorch's global generator the same way.
pub fn load_gpt2(
    dir: impl AsRef<Path>,
    device: Device,
) -> Result<(nn::VarStore, GptModel), Gpt2WeightsError> {
    let dir = dir.as_ref();
    let cfg = read_config(dir.join(CONFIG_FILE))?;
    let vs = nn::VarStore::new(device);
    let model = GptModel::new(vs.root(), &cfg)?;
    load_gpt2_safetensors(&model, dir.join(WEIGHTS_FILE))?;
    Ok((vs, model))
}

/// `model`'s weights as Hugging Face GPT-2 tensors (keys with the
/// `transformer.` prefix, contiguous float32 on the CPU): the inverse of
/// [`load_weights_into_gpt`]. A model without `qkv_bias` gets zero
/// `c_attn.bias` (the same function); `lm_head.weight` is included only when
/// `out_head` differs from `tok_emb`.
pub fn gpt2_tensors(model: &GptModel) -> Vec<(String, Tensor)> {
    let cpu = |t: &Tensor| {
        t.detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
    };
    let mut out = Vec::new();
    for (key, map) in hf_map(model) {
        let t = match map {
            Map::Same(t) => cpu(t),
            Map::Transposed(t) => cpu(&t.tr()),
            Map::Qkv(parts, weight) => {
                let parts: Vec<Tensor> = parts
                    .iter()
                    .map(|p| if weight { p.tr() } else { p.shallow_clone() })
                    .collect();
                cpu(&Tensor::cat(&parts, -1))
            }
        };
        out.push((format!("transformer.{key}"), t));
        if key.ends_with("attn.c_attn.weight") && !model.cfg.qkv_bias {
            let e = model.cfg.emb_dim;
            let name = format!("transformer.{}", key.replace(".weight", ".bias"));
            out.push((name, Tensor::zeros([3 * e], (Kind::Float, Device::Cpu))));
        }
    }
    if !is_tied(model) {
        out.push(("lm_head.weight".to_string(), cpu(&model.out_head.ws)));
    }
    out
}

/// True when `out_head` holds the same values as `tok_emb` (weight tying).
fn is_tied(model: &GptModel) -> bool {
    let (head, wte) = (&model.out_head.ws, &model.tok_emb.ws);
    head.size() == wte.size() && head.to_device(wte.device()).equal(wte)
}

/// Write `model` as a Hugging Face GPT-2 directory: `config.json`
/// ([`config_to_hf`]) and `model.safetensors` ([`gpt2_tensors`]), each
/// atomically (write, then rename), so `transformers`' `GPT2LMHeadModel`
/// and [`load_gpt2`] both read it.
///
/// ```no_run
/// use llm_core::model::gpt2_weights::{export_gpt2, load_gpt2};
/// # use llm_core::model::gpt::{GptConfig, GptModel};
/// # use llm_core::tch::{nn, Device};
/// # let vs = nn::VarStore::new(Device::Cpu);
/// # let model = GptModel::new(vs.root(), &GptConfig { qkv_bias: true, ..GptConfig::gpt2_small() })?;
/// export_gpt2(&model, "my-gpt2")?;
/// let (_vs, again) = load_gpt2("my-gpt2", Device::Cpu)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_gpt2(model: &GptModel, dir: impl AsRef<Path>) -> Result<(), Gpt2WeightsError> {
    let dir = dir.as_ref();
    if let Some((layer, _)) = model
        .linear_layers()
        .into_iter()
        .find(|(_, l)| l.lora.is_some())
    {
        return Err(Gpt2WeightsError::UnmergedLora { layer });
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tensors = gpt2_tensors(model);
    let weights = dir.join(WEIGHTS_FILE);
    files::write_atomically(&weights, |tmp| {
        Tensor::write_safetensors(&tensors, tmp).map_err(|e| FileError::Torch {
            path: weights.clone(),
            message: e.to_string(),
        })
    })?;
    let cfg = GptConfig {
        qkv_bias: true,
        ..model.cfg
    };
    let config = config_to_hf(&cfg, is_tied(model));
    let text = serde_json::to_string_pretty(&config).map_err(|source| Gpt2WeightsError::Json {
        path: dir.join(CONFIG_FILE),
        source,
    })?;
    files::write_bytes(dir.join(CONFIG_FILE), text.as_bytes())?;
    Ok(())
}
