//! Training checkpoints (chapter 5 and appendix D): everything needed to
//! stop a run and continue it exactly.
//!
//! A checkpoint ([`save_training_checkpoint`]) is a directory of three files,
//! written as a whole into a temporary directory and then swapped in
//! ([`crate::files::write_dir_atomically`]: a crash or Ctrl-C leaves the old
//! checkpoint or the new one):
//!
//! | file | holds |
//! |---|---|
//! | `model.safetensors` | the model's weights, under their `VarStore` names |
//! | `optimizer.safetensors` | AdamW's `<param>.exp_avg` / `<param>.exp_avg_sq`, and libtorch's RNG state (`rng_state.cpu`, as `torch.get_rng_state()`) |
//! | `checkpoint.json` | the model config, AdamW's settings and step, and the [`TrainHistory`] (epoch, global step, tokens seen, losses) |
//!
//! Loading it back ([`load_training_checkpoint`]) restores the weights, the
//! optimizer and the generator, so training continues exactly as if it had
//! never stopped. Everything is checked before anything is changed: a load
//! that fails (a missing file, a tensor of another shape or dtype, a config
//! that does not match the weights) leaves the model and the optimizer as
//! they were.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::files::{
    copy_pairs, dtype_name, format_err, io_err, match_varstore, read_tensors, recover_dir,
    torch_err, write_dir_atomically, FileError,
};
use crate::model::gpt::GptConfig;
use crate::rng::RngState;
use crate::train::history::TrainHistory;
use crate::train::optim::AdamW;

/// What `checkpoint.json` holds. `H` is the history of the loop that saved
/// it: chapter 5's [`TrainHistory`], or DPO's
/// ([`crate::finetune::dpo::DpoHistory`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointInfo<H = TrainHistory> {
    /// Always `"llm-from-scratch-rs training checkpoint"`.
    pub format: String,
    pub version: u32,
    /// The model's shape.
    pub config: GptConfig,
    /// AdamW's settings and its step count.
    pub optimizer: OptimizerInfo,
    /// Epoch, step, tokens seen and the losses so far.
    pub history: H,
}

/// AdamW's settings as saved in `checkpoint.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizerInfo {
    pub name: String,
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub step: u64,
}

const FORMAT: &str = "llm-from-scratch-rs training checkpoint";
const CHECKPOINT_JSON: &str = "checkpoint.json";
const RNG_KEY: &str = "rng_state.cpu";

/// Save a training checkpoint into the directory `dir` (see the
/// [module docs](self)): the model in `vs`, `optimizer`'s state and the
/// CPU generator's state, and `history`. Crash-safe: `dir` holds either the
/// previous checkpoint or this one.
///
/// ```no_run
/// # use llm_core::train::{checkpoint, optim::AdamW, history::TrainHistory};
/// # use llm_core::model::gpt::{GptConfig, GptModel};
/// # use llm_core::tch::{nn, Device};
/// # let cfg = GptConfig::gpt2_small();
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let optimizer = AdamW::new(llm_core::train::optim::named_parameters(&vs, &model.parameters()), 4e-4, 0.1);
/// // ... train ...
/// checkpoint::save_training_checkpoint("checkpoints/verdict", &vs, &cfg, &optimizer, &TrainHistory::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_training_checkpoint<H: Serialize + Clone>(
    dir: impl AsRef<Path>,
    vs: &VarStore,
    config: &GptConfig,
    optimizer: &AdamW,
    history: &H,
) -> Result<(), FileError> {
    let dir = dir.as_ref();
    let rng = RngState::capture(Device::Cpu).map_err(|e| format_err(dir, e.to_string()))?;
    let info = CheckpointInfo {
        format: FORMAT.to_string(),
        version: 1,
        config: *config,
        optimizer: OptimizerInfo {
            name: "AdamW".to_string(),
            lr: optimizer.lr,
            weight_decay: optimizer.weight_decay,
            betas: optimizer.betas,
            eps: optimizer.eps,
            step: optimizer.step_count(),
        },
        history: history.clone(),
    };
    write_dir_atomically(dir, CHECKPOINT_JSON, |tmp| {
        let model_path = tmp.join("model.safetensors");
        vs.save(&model_path).map_err(torch_err(&model_path))?;
        let opt_path = tmp.join("optimizer.safetensors");
        let mut tensors: Vec<(String, Tensor)> = optimizer
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.to_device(Device::Cpu)))
            .collect();
        tensors.push((RNG_KEY.to_string(), Tensor::from_slice(&rng.bytes)));
        Tensor::write_safetensors(&tensors, &opt_path).map_err(torch_err(&opt_path))?;
        let json_path = tmp.join(CHECKPOINT_JSON);
        let json =
            serde_json::to_vec_pretty(&info).map_err(|e| format_err(&json_path, e.to_string()))?;
        fs::write(&json_path, json).map_err(io_err(&json_path))
    })
}

/// Bring the checkpoint directory `dir` to a clean state after interrupted
/// saves: finish a swap that a kill cut short, remove temporary and previous
/// directories (saying so on stderr), and refuse to guess when only an older
/// checkpoint is left (see [`crate::files::recover_dir`]).
///
/// Called by every save and load of a training checkpoint; call it yourself
/// to tidy a directory.
pub fn recover_checkpoint_dir(dir: impl AsRef<Path>) -> Result<(), FileError> {
    recover_dir(dir, CHECKPOINT_JSON)
}

/// The error for a directory without a complete checkpoint.
fn no_checkpoint(dir: &Path) -> FileError {
    let message = if dir.is_dir() {
        "not a complete training checkpoint (checkpoint.json is missing)"
    } else {
        "no training checkpoint here"
    };
    FileError::Io {
        path: dir.join(CHECKPOINT_JSON),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
    }
}

/// Read `checkpoint.json` of a training checkpoint: the model config (to
/// build a model of the right shape before loading) and the history. Like a
/// load, it first finishes or cleans up what interrupted saves left
/// ([`recover_checkpoint_dir`]).
pub fn read_checkpoint_info(dir: impl AsRef<Path>) -> Result<CheckpointInfo, FileError> {
    read_checkpoint_info_of(dir)
}

/// [`read_checkpoint_info`] of a checkpoint whose history is an `H`.
pub fn read_checkpoint_info_of<H: serde::de::DeserializeOwned>(
    dir: impl AsRef<Path>,
) -> Result<CheckpointInfo<H>, FileError> {
    let dir = dir.as_ref();
    recover_checkpoint_dir(dir)?;
    let path = dir.join(CHECKPOINT_JSON);
    if !path.is_file() {
        return Err(no_checkpoint(dir));
    }
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let info: CheckpointInfo<H> = serde_json::from_str(crate::data::strip_bom(&text))
        .map_err(|e| format_err(&path, e.to_string()))?;
    if info.format != FORMAT {
        return Err(format_err(
            &path,
            format!("format is {:?}, expected {FORMAT:?}", info.format),
        ));
    }
    info.config
        .validate()
        .map_err(|e| format_err(&path, format!("config: {e}")))?;
    Ok(info)
}

/// Check the config saved in `checkpoint.json` against the weights saved
/// beside it: the embeddings' shapes, the number of blocks and the query
/// bias. (The output head is not checked: chapter 6 replaces it.)
fn check_config_against_weights(
    config: &GptConfig,
    tensors: &[(String, Tensor)],
    json_path: &Path,
    weights_path: &Path,
) -> Result<(), FileError> {
    let mismatch = |what: String| {
        format_err(
            json_path,
            format!(
                "the saved config does not match the weights in {}: {what}",
                weights_path.display()
            ),
        )
    };
    let shape_of = |key: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == key)
            .map(|(_, t)| t.size())
    };
    let expect = [
        ("tok_emb.weight", vec![config.vocab_size, config.emb_dim]),
        (
            "pos_emb.weight",
            vec![config.context_length, config.emb_dim],
        ),
    ];
    for (key, want) in expect {
        if let Some(found) = shape_of(key) {
            if found != want {
                return Err(mismatch(format!(
                    "{key} has shape {found:?}, the config gives {want:?}"
                )));
            }
        }
    }
    let blocks: std::collections::BTreeSet<i64> = tensors
        .iter()
        .filter_map(|(n, _)| {
            n.strip_prefix("trf_blocks.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if !blocks.is_empty() && blocks.len() as i64 != config.n_layers {
        return Err(mismatch(format!(
            "{} transformer blocks, the config gives n_layers = {}",
            blocks.len(),
            config.n_layers
        )));
    }
    if !blocks.is_empty() {
        let has_bias = shape_of("trf_blocks.0.att.W_query.bias").is_some();
        if has_bias != config.qkv_bias {
            return Err(mismatch(format!(
                "the weights {} query/key/value biases, the config has qkv_bias = {}",
                if has_bias { "have" } else { "have no" },
                config.qkv_bias
            )));
        }
    }
    Ok(())
}

/// Load a training checkpoint saved by [`save_training_checkpoint`]: the
/// weights into `vs` (every variable must be there with its shape and
/// dtype), the moments and step into `optimizer`, and the CPU generator's
/// state into libtorch. Returns the checkpoint's info; pass its `history` to
/// [`crate::train::TrainOptions::resume`] to continue training.
///
/// Every file is read and checked (the config against the weights, the
/// weights against `vs`, the optimizer state against `optimizer`, the
/// generator state) before anything is changed: on an error, the model, the
/// optimizer and the generator are as they were.
pub fn load_training_checkpoint(
    dir: impl AsRef<Path>,
    vs: &mut VarStore,
    optimizer: &mut AdamW,
) -> Result<CheckpointInfo, FileError> {
    load_training_checkpoint_of(dir, vs, optimizer)
}

/// [`load_training_checkpoint`] of a checkpoint whose history is an `H`.
pub fn load_training_checkpoint_of<H: serde::de::DeserializeOwned>(
    dir: impl AsRef<Path>,
    vs: &mut VarStore,
    optimizer: &mut AdamW,
) -> Result<CheckpointInfo<H>, FileError> {
    let dir = dir.as_ref();
    let info = read_checkpoint_info_of::<H>(dir)?;
    let model_path = dir.join("model.safetensors");
    let model_tensors = read_tensors(&model_path)?;
    check_config_against_weights(
        &info.config,
        &model_tensors,
        &dir.join(CHECKPOINT_JSON),
        &model_path,
    )?;
    let pairs = match_varstore(vs, model_tensors, &model_path)?;
    let opt_path = dir.join("optimizer.safetensors");
    let mut tensors = read_tensors(&opt_path)?;
    let rng_at = tensors
        .iter()
        .position(|(n, _)| n == RNG_KEY)
        .ok_or_else(|| format_err(&opt_path, format!("no tensor {RNG_KEY:?}")))?;
    let (_, rng_tensor) = tensors.swap_remove(rng_at);
    let expected_len = RngState::capture(Device::Cpu)
        .map_err(|e| format_err(&opt_path, e.to_string()))?
        .bytes
        .len();
    if rng_tensor.kind() != Kind::Uint8 || rng_tensor.numel() != expected_len {
        return Err(format_err(
            &opt_path,
            format!(
                "{RNG_KEY:?} is {} of {} elements, expected uint8 of {expected_len} (libtorch's CPU generator state)",
                dtype_name(rng_tensor.kind()),
                rng_tensor.numel()
            ),
        ));
    }
    let bytes = Vec::<u8>::try_from(rng_tensor.flatten(0, -1))
        .map_err(|e| format_err(&opt_path, e.to_string()))?;
    // the last check: `load_state` validates every tensor before it changes anything
    optimizer
        .load_state(tensors, info.optimizer.step)
        .map_err(|e| format_err(&opt_path, e.to_string()))?;
    optimizer.lr = info.optimizer.lr;
    copy_pairs(&pairs);
    RngState {
        device: Device::Cpu,
        bytes,
    }
    .restore()
    .map_err(|e| format_err(&opt_path, e.to_string()))?;
    Ok(info)
}
