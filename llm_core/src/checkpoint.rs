//! Crash-safe files: write to a temporary file beside the target, flush it to
//! disk, then rename it into place. A crash or Ctrl-C at any moment leaves
//! either the old file or the new one, never a half-written one.
//!
//! A *training checkpoint* ([`save_training_checkpoint`]) is a directory of
//! three files, written as a whole into a temporary directory and then
//! swapped in:
//!
//! | file | holds |
//! |---|---|
//! | `model.safetensors` | the model's weights, under their `VarStore` names |
//! | `optimizer.safetensors` | AdamW's `<param>.exp_avg` / `<param>.exp_avg_sq`, and libtorch's RNG state (`rng_state.cpu`, as `torch.get_rng_state()`) |
//! | `checkpoint.json` | the model config, AdamW's settings and step, and the [`crate::train::TrainHistory`] (epoch, global step, tokens seen, losses) |
//!
//! Loading it back ([`load_training_checkpoint`]) restores the weights, the
//! optimizer and the generator, so training continues exactly as if it had
//! never stopped.
//!
//! ```no_run
//! use llm_core::checkpoint;
//! use llm_core::tch::{nn, Device};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! // ... build and train a model in `vs` ...
//! checkpoint::save_varstore(&vs, "model.safetensors")?;
//! # Ok::<(), llm_core::checkpoint::CheckpointError>(())
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::GptConfig;
use crate::optim::AdamW;
use crate::rng::RngState;
use crate::train::TrainHistory;

/// Errors from saving or loading a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Torch { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

fn format_err(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn torch_err(path: &Path) -> impl FnOnce(tch::TchError) -> CheckpointError + '_ {
    move |e| CheckpointError::Torch {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A temporary path in the same directory as `path` (so the rename is atomic),
/// keeping its extension (tch picks the file format from it).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    let tmp = match ext {
        Some(ext) => format!(".{name}.tmp-{}.{ext}", std::process::id()),
        None => format!(".{name}.tmp-{}", std::process::id()),
    };
    path.with_file_name(tmp)
}

/// Run `write` on a temporary path, fsync the result, then rename it to `path`.
/// On error the temporary file is removed and `path` is untouched.
pub fn write_atomically<F>(path: &Path, write: F) -> Result<(), CheckpointError>
where
    F: FnOnce(&Path) -> Result<(), CheckpointError>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = temp_path_for(path);
    let result = write(&tmp)
        .and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&tmp))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // make the rename itself durable
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    result
}

/// Write bytes to `path` atomically.
pub fn write_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    write_atomically(path, |tmp| {
        let mut f = fs::File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(bytes).map_err(io_err(tmp))
    })
}

/// Save every variable of `vs` to `path` (safetensors when the name ends in
/// `.safetensors`), atomically.
pub fn save_varstore(vs: &VarStore, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    write_atomically(path, |tmp| {
        vs.save(tmp).map_err(|e| CheckpointError::Torch {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })
}

/// Load every variable of `vs` from `path`; an error names the file and the
/// first variable that is missing or has the wrong shape.
pub fn load_varstore(vs: &mut VarStore, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such checkpoint file"),
        });
    }
    vs.load(path).map_err(|e| CheckpointError::Torch {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Fill the directory `dir` through `write` (which gets a temporary
/// directory beside it), then swap it into place: the old `dir` is renamed
/// away, the new one renamed in, the old one removed. At any moment there is
/// either the complete old checkpoint or the complete new one (between the
/// two renames only the old one, as `<dir>.old-<pid>`, which
/// [`load_training_checkpoint`] falls back to).
pub fn write_dir_atomically<F>(dir: &Path, write: F) -> Result<(), CheckpointError>
where
    F: FnOnce(&Path) -> Result<(), CheckpointError>,
{
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format_err(dir, "a checkpoint directory needs a name"))?;
    let parent = dir
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = write(&tmp).and_then(|()| {
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path))?;
        }
        Ok(())
    });
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        if had_old {
            let _ = fs::rename(&old, dir);
        }
        return Err(io_err(dir)(e));
    }
    if let Ok(d) = fs::File::open(parent) {
        let _ = d.sync_all();
    }
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// What `checkpoint.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Always `"llm-from-scratch-rs training checkpoint"`.
    pub format: String,
    pub version: u32,
    /// The model's shape.
    pub config: GptConfig,
    /// AdamW's settings and its step count.
    pub optimizer: OptimizerInfo,
    /// Epoch, step, tokens seen and the losses so far.
    pub history: TrainHistory,
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
const RNG_KEY: &str = "rng_state.cpu";

/// Save a training checkpoint into the directory `dir` (see the
/// [module docs](self)): the model in `vs`, `optimizer`'s state and the
/// CPU generator's state, and `history`. Crash-safe: `dir` holds either the
/// previous checkpoint or this one.
///
/// ```no_run
/// # use llm_core::{checkpoint, optim::AdamW, train::TrainHistory, model::{GptConfig, GptModel}};
/// # use llm_core::tch::{nn, Device};
/// # let cfg = GptConfig::gpt2_small();
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = GptModel::new(vs.root(), &cfg)?;
/// let optimizer = AdamW::new(llm_core::optim::named_parameters(&vs, &model.parameters()), 4e-4, 0.1);
/// // ... train ...
/// checkpoint::save_training_checkpoint("checkpoints/verdict", &vs, &cfg, &optimizer, &TrainHistory::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_training_checkpoint(
    dir: impl AsRef<Path>,
    vs: &VarStore,
    config: &GptConfig,
    optimizer: &AdamW,
    history: &TrainHistory,
) -> Result<(), CheckpointError> {
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
    write_dir_atomically(dir, |tmp| {
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
        let json_path = tmp.join("checkpoint.json");
        let json =
            serde_json::to_vec_pretty(&info).map_err(|e| format_err(&json_path, e.to_string()))?;
        fs::write(&json_path, json).map_err(io_err(&json_path))
    })
}

/// The directory to read: `dir`, or the previous checkpoint that a crash
/// between the two renames of [`write_dir_atomically`] left beside it.
fn existing_checkpoint_dir(dir: &Path) -> Result<PathBuf, CheckpointError> {
    if dir.join("checkpoint.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = dir
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(".{name}.old-");
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix)
                && entry.path().join("checkpoint.json").is_file()
            {
                return Ok(entry.path());
            }
        }
    }
    Err(CheckpointError::Io {
        path: dir.join("checkpoint.json"),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no training checkpoint here"),
    })
}

/// Read `checkpoint.json` of a training checkpoint: the model config (to
/// build a model of the right shape before loading) and the history.
pub fn read_checkpoint_info(dir: impl AsRef<Path>) -> Result<CheckpointInfo, CheckpointError> {
    let dir = existing_checkpoint_dir(dir.as_ref())?;
    let path = dir.join("checkpoint.json");
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let info: CheckpointInfo =
        serde_json::from_slice(&bytes).map_err(|e| format_err(&path, e.to_string()))?;
    if info.format != FORMAT {
        return Err(format_err(
            &path,
            format!("format is {:?}, expected {FORMAT:?}", info.format),
        ));
    }
    Ok(info)
}

/// Load a training checkpoint saved by [`save_training_checkpoint`]: the
/// weights into `vs` (every variable must be there with its shape), the
/// moments and step into `optimizer`, and the CPU generator's state into
/// libtorch. Returns the checkpoint's info; pass its `history` to
/// [`crate::train::TrainOptions::resume`] to continue training.
pub fn load_training_checkpoint(
    dir: impl AsRef<Path>,
    vs: &mut VarStore,
    optimizer: &mut AdamW,
) -> Result<CheckpointInfo, CheckpointError> {
    let dir = existing_checkpoint_dir(dir.as_ref())?;
    let info = read_checkpoint_info(&dir)?;
    load_varstore(vs, dir.join("model.safetensors"))?;
    let opt_path = dir.join("optimizer.safetensors");
    let mut tensors = Tensor::read_safetensors(&opt_path).map_err(torch_err(&opt_path))?;
    let rng_at = tensors
        .iter()
        .position(|(n, _)| n == RNG_KEY)
        .ok_or_else(|| format_err(&opt_path, format!("no tensor {RNG_KEY:?}")))?;
    let (_, rng_tensor) = tensors.swap_remove(rng_at);
    let bytes = Vec::<u8>::try_from(rng_tensor.to_kind(Kind::Uint8).flatten(0, -1))
        .map_err(|e| format_err(&opt_path, e.to_string()))?;
    optimizer
        .load_state(tensors, info.optimizer.step)
        .map_err(|e| format_err(&opt_path, e.to_string()))?;
    optimizer.lr = info.optimizer.lr;
    RngState {
        device: Device::Cpu,
        bytes,
    }
    .restore()
    .map_err(|e| format_err(&opt_path, e.to_string()))?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind, Tensor};

    #[test]
    fn save_and_load_roundtrip_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt/model.safetensors");
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy(
            "w",
            &Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]),
        );
        save_varstore(&vs, &path).unwrap();
        let mut vs2 = nn::VarStore::new(Device::Cpu);
        let w2 = vs2.root().zeros("w", &[2, 3]);
        load_varstore(&mut vs2, &path).unwrap();
        assert!(w.equal(&w2));
        let files: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_bytes(&path, b"old").unwrap();
        let err = write_atomically(&path, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(CheckpointError::Torch {
                path: tmp.to_path_buf(),
                message: "interrupted".into(),
            })
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_is_named() {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let err = load_varstore(&mut vs, "/nonexistent/model.safetensors").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/model.safetensors"));
    }
}
