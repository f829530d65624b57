//! Crash-safe files: write to a temporary file beside the target, flush it to
//! disk, then rename it into place. A crash or Ctrl-C at any moment leaves
//! either the old file or the new one, never a half-written one.
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

use tch::nn::VarStore;

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
