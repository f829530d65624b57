//! Open weights from Hugging Face (the book's `load_weights_into_llama` and
//! `load_weights_into_qwen`): a model directory with `config.json` and
//! either one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, loaded into an [`OpenModel`] in float32,
//! bfloat16 or float16.
//!
//! The map, key by key (`model.layers.{i}` is `trf_blocks.{i}`):
//!
//! | Hugging Face | [`OpenModel`] |
//! |---|---|
//! | `model.embed_tokens.weight` | `tok_emb.weight` (and the output head when tied) |
//! | `model.layers.{i}.self_attn.q_proj` / `k_proj` / `v_proj` / `o_proj` `.weight` | `att.W_query` / `W_key` / `W_value` / `out_proj` |
//! | `model.layers.{i}.self_attn.q_norm` / `k_norm` `.weight` (Qwen3) | `att.q_norm` / `k_norm` `.scale` |
//! | `model.layers.{i}.mlp.gate_proj` / `up_proj` / `down_proj` `.weight` | `ff.fc1` / `fc2` / `fc3` |
//! | `model.layers.{i}.input_layernorm` / `post_attention_layernorm` `.weight` | `norm1` / `norm2` `.scale` |
//! | `model.norm.weight` | `final_norm.scale` |
//! | `lm_head.weight` | `out_head.weight` (skipped when the config ties it to the embedding) |
//!
//! Every header is read and checked first — each key mapped, each shape
//! equal to the model's, each byte range inside its file — so a wrong file
//! is an error naming the file, the key and both shapes before anything is
//! copied. Then each tensor is read from its file straight into the
//! model's variable (or, when the dtype or device differ, into one buffer
//! of that tensor's size), so loading needs little more memory than the
//! model itself: no file is read whole, nothing is memory-mapped.
//!
//! ```no_run
//! use llm_core::model::hf_weights::load_open_model;
//! use llm_core::tch::{Device, Kind};
//!
//! let dir = llm_core::data::open_model_dir("Qwen/Qwen3-0.6B")?;
//! let (_vs, model) = load_open_model(&dir, Device::Cpu, Kind::BFloat16)?;
//! println!("{model}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use crate::files::{dtype_name, io_err, safetensors_header, FileError, SafetensorsEntry};
use crate::model::gpt::ModelError;
use crate::model::init;
use crate::model::open_model::{HfConfigError, OpenModel, OpenModelConfig};

/// The configuration file of a Hugging Face model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of an unsharded model.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The list of shards of a sharded model.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// What can go wrong loading open weights; each names the file, and the
/// key and shapes where there are some.
#[derive(Debug, thiserror::Error)]
pub enum HfWeightsError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Config(#[from] HfConfigError),
    #[error("building the model: {0}")]
    Model(#[from] ModelError),
    #[error("{dir}: neither {WEIGHTS_FILE} nor {INDEX_FILE} is there (is this a Hugging Face model directory?)")]
    NoWeights { dir: PathBuf },
    #[error("{path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: missing tensor {key:?} (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
    },
    #[error("{path}: unexpected tensor {key:?} with shape {shape:?} (not part of a {family} model with this config)")]
    UnexpectedTensor {
        path: PathBuf,
        key: String,
        shape: Vec<i64>,
        family: String,
    },
    #[error("{path}: tensor {key:?} has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("{path}: tensor {key:?} has dtype {dtype}; accepted: F32, BF16, F16")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("weights can be loaded as float32, bfloat16 or float16, not {0}")]
    Kind(String),
}

/// The Hugging Face name of each of the model's tensors, with the tensor.
fn hf_names(model: &OpenModel) -> Vec<(String, Tensor)> {
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        model.tok_emb.ws.shallow_clone(),
    )];
    for (i, b) in model.trf_blocks.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let att = &b.att;
        for (hf, t) in [
            ("self_attn.q_proj", &att.w_query.ws),
            ("self_attn.k_proj", &att.w_key.ws),
            ("self_attn.v_proj", &att.w_value.ws),
            ("self_attn.o_proj", &att.out_proj.ws),
            ("mlp.gate_proj", &b.ff.fc1.ws),
            ("mlp.up_proj", &b.ff.fc2.ws),
            ("mlp.down_proj", &b.ff.fc3.ws),
            ("input_layernorm", &b.norm1.scale),
            ("post_attention_layernorm", &b.norm2.scale),
        ] {
            out.push((format!("{p}.{hf}.weight"), t.shallow_clone()));
        }
        if let (Some(q), Some(k)) = (&att.q_norm, &att.k_norm) {
            out.push((
                format!("{p}.self_attn.q_norm.weight"),
                q.scale.shallow_clone(),
            ));
            out.push((
                format!("{p}.self_attn.k_norm.weight"),
                k.scale.shallow_clone(),
            ));
        }
    }
    out.push((
        "model.norm.weight".to_string(),
        model.final_norm.scale.shallow_clone(),
    ));
    if !model.cfg.tie_embeddings {
        out.push((
            "lm_head.weight".to_string(),
            model.out_head.ws.shallow_clone(),
        ));
    }
    out
}

/// The weight files of `dir`, with the tensors each holds: the shards of
/// `model.safetensors.index.json`, else `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfWeightsError> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let text = fs::read_to_string(&index).map_err(io_err(&index))?;
        let bad = |message: String| HfWeightsError::Index {
            path: index.clone(),
            message,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for (key, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("weight_map[{key:?}] is not a file name")))?;
            if file.contains('/') || file.contains("..") {
                return Err(bad(format!(
                    "weight_map[{key:?}] = {file:?} is not a file of this directory"
                )));
            }
            let path = dir.join(file);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files.sort();
        return Ok(files);
    }
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(HfWeightsError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

fn kind_of(dtype: &str) -> Option<Kind> {
    match dtype {
        "F32" => Some(Kind::Float),
        "BF16" => Some(Kind::BFloat16),
        "F16" => Some(Kind::Half),
        _ => None,
    }
}

/// Load the model in directory `dir` (`config.json` and its safetensors)
/// onto `device`, its weights held as `kind` (`Kind::Float`,
/// `Kind::BFloat16` or `Kind::Half`). Returns the variable store (which
/// owns the weights) and the model. See the [module docs](self) for the
/// key map and the checks.
pub fn load_open_model(
    dir: impl AsRef<Path>,
    device: Device,
    kind: Kind,
) -> Result<(nn::VarStore, OpenModel), HfWeightsError> {
    let dir = dir.as_ref();
    let config_path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let cfg = OpenModelConfig::from_hf_config(&text, &config_path)?;
    let (vs, model) = build_empty(&cfg, device, kind)?;
    load_weights_into(&model, dir)?;
    Ok((vs, model))
}

/// A model of `cfg` whose variables (of `kind` on `device`) hold zeros,
/// to be filled by [`load_weights_into`].
pub fn build_empty(
    cfg: &OpenModelConfig,
    device: Device,
    kind: Kind,
) -> Result<(nn::VarStore, OpenModel), HfWeightsError> {
    if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
        return Err(HfWeightsError::Kind(dtype_name(kind)));
    }
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    let model = init::without_random_init(|| OpenModel::new(vs.root(), cfg))?;
    Ok((vs, model))
}

/// Fill `model`'s weights from the safetensors of `dir` (see
/// [`load_open_model`]): all headers are checked against the model first,
/// then each tensor is read into place.
pub fn load_weights_into(model: &OpenModel, dir: &Path) -> Result<(), HfWeightsError> {
    let files = weight_files(dir)?;
    // 1. every header, every key, every shape
    let mut found: HashMap<String, (PathBuf, SafetensorsEntry)> = HashMap::new();
    for path in &files {
        let header = safetensors_header(path).map_err(|message| HfWeightsError::Safetensors {
            path: path.clone(),
            message,
        })?;
        for (key, entry) in header {
            found.insert(key, (path.clone(), entry));
        }
    }
    let wanted: BTreeMap<String, Tensor> = hf_names(model).into_iter().collect();
    let first = files[0].clone();
    let mut plan = Vec::with_capacity(wanted.len());
    for (key, var) in &wanted {
        let Some((path, entry)) = found.remove(key) else {
            return Err(HfWeightsError::MissingTensor {
                path: if files.len() == 1 {
                    first
                } else {
                    dir.join(INDEX_FILE)
                },
                key: key.clone(),
                expected: var.size(),
            });
        };
        if entry.shape != var.size() {
            return Err(HfWeightsError::Shape {
                path,
                key: key.clone(),
                expected: var.size(),
                found: entry.shape,
            });
        }
        let Some(src_kind) = kind_of(&entry.dtype) else {
            return Err(HfWeightsError::Dtype {
                path,
                key: key.clone(),
                dtype: entry.dtype,
            });
        };
        plan.push((key, var, path, entry, src_kind));
    }
    let mut rest: Vec<_> = found.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, (path, entry)) in rest {
        let skip = (key == "lm_head.weight" && model.cfg.tie_embeddings)
            || key.ends_with(".rotary_emb.inv_freq");
        if !skip {
            return Err(HfWeightsError::UnexpectedTensor {
                path,
                key,
                shape: entry.shape,
                family: model.cfg.family.to_string(),
            });
        }
    }
    // 2. each tensor into place
    let mut open: Option<(PathBuf, fs::File)> = None;
    for (_key, var, path, entry, src_kind) in plan {
        if open.as_ref().map(|(p, _)| p != &path).unwrap_or(true) {
            let f = fs::File::open(&path).map_err(io_err(&path))?;
            open = Some((path.clone(), f));
        }
        let (_, file) = open.as_mut().expect("opened above");
        let direct = var.kind() == src_kind && var.device() == Device::Cpu && var.is_contiguous();
        let mut target = if direct {
            var.shallow_clone()
        } else {
            Tensor::empty(entry.shape.as_slice(), (src_kind, Device::Cpu))
        };
        read_bytes_into(file, &path, &entry, &mut target)?;
        if !direct {
            tch::no_grad(|| var.shallow_clone().copy_(&target));
        }
    }
    Ok(())
}

/// Read the bytes of `entry` from `file` into the (contiguous, CPU) tensor.
fn read_bytes_into(
    file: &mut fs::File,
    path: &Path,
    entry: &SafetensorsEntry,
    target: &mut Tensor,
) -> Result<(), HfWeightsError> {
    let n = (entry.end - entry.start) as usize;
    assert_eq!(n, target.numel() * target.kind().elt_size_in_bytes());
    // safetensors are little-endian, as are the machines libtorch runs on
    let bytes = unsafe { std::slice::from_raw_parts_mut(target.data_ptr() as *mut u8, n) };
    file.seek(SeekFrom::Start(entry.start))
        .map_err(io_err(path))?;
    file.read_exact(bytes).map_err(io_err(path))?;
    Ok(())
}
