//! Crash-safe files: write to a temporary file beside the target, flush it to
//! disk, then rename it into place. A crash or Ctrl-C at any moment leaves
//! either the old file or the new one, never a half-written one.
//!
//! The ground floor of the crate: the tokenizers, the plots, the data files,
//! the weights and the training checkpoints all write through here, and every
//! error names its file ([`FileError`]).
//!
//! A directory is swapped in as a whole ([`write_dir_atomically`]) by a small
//! state machine of renames beside `dir`: `.<name>.tmp-<pid>` (being written)
//! → `.<name>.new-<pid>` (complete) → `dir` (the old `dir` waits as
//! `.<name>.old-<pid>` until the new one is in place). A kill at any moment
//! leaves a state the next save or load recognises
//! ([`recover_checkpoint_dir`]): it finishes an interrupted swap, removes
//! temporary directories of interrupted saves, and says so on stderr. A load
//! returns the newest complete directory or an error, never an older one
//! silently.
//!
//! ```no_run
//! use llm_core::files;
//! use llm_core::tch::{nn, Device};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! // ... build and train a model in `vs` ...
//! files::save_varstore(&vs, "model.safetensors")?;
//! files::write_bytes("notes.txt", b"trained for 10 epochs")?;
//! # Ok::<(), llm_core::files::FileError>(())
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Errors from reading or writing a file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
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

pub(crate) fn format_err(path: &Path, message: impl Into<String>) -> FileError {
    FileError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn torch_err(path: &Path) -> impl FnOnce(tch::TchError) -> FileError + '_ {
    move |e| FileError::Torch {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Name the file in an I/O error: `fs::read(p).map_err(io_err(p))?`.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
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
pub fn write_atomically<F, E>(path: &Path, write: F) -> Result<(), E>
where
    F: FnOnce(&Path) -> Result<(), E>,
    E: From<FileError>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    remove_leftover_temp_files(path);
    let tmp = temp_path_for(path);
    let result = write(&tmp)
        .and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(&tmp)(e).into())
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err(path)(e).into()));
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
pub fn write_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), FileError> {
    let path = path.as_ref();
    write_atomically(path, |tmp| {
        let mut f = fs::File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(bytes).map_err(io_err(tmp))
    })
}

/// Save every variable of `vs` to `path` (safetensors when the name ends in
/// `.safetensors`), atomically.
pub fn save_varstore(vs: &VarStore, path: impl AsRef<Path>) -> Result<(), FileError> {
    let path = path.as_ref();
    write_atomically(path, |tmp| {
        vs.save(tmp).map_err(|e| FileError::Torch {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    })
}

/// The parent directory of `path` (`.` for a bare name) and its file name.
fn parent_and_name(path: &Path) -> Result<(PathBuf, String), FileError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format_err(path, "a checkpoint path needs a file or directory name"))?;
    let parent = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok((parent, name))
}

/// Whether the process `pid` still runs (another process may be saving right
/// now). Only Linux can tell cheaply; elsewhere every other pid counts as gone.
fn pid_alive(pid: u32) -> bool {
    pid == std::process::id()
        || (cfg!(target_os = "linux") && Path::new("/proc").join(pid.to_string()).exists())
}

/// The entries of `parent` named `.<name>.<kind>-<pid>[.<ext>]`: (kind, pid,
/// path), for the kinds `tmp`, `new` and `old`.
fn siblings(parent: &Path, name: &str) -> Vec<(String, u32, PathBuf)> {
    let prefix = format!(".{name}.");
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return found;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((kind, tail)) = rest.split_once('-') else {
            continue;
        };
        if !matches!(kind, "tmp" | "new" | "old") {
            continue;
        }
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let after = &tail[digits.len()..];
        if after.is_empty() || after.starts_with('.') {
            if let Ok(pid) = digits.parse() {
                found.push((kind.to_string(), pid, entry.path()));
            }
        }
    }
    found.sort();
    found
}

/// Bytes under `path` (a file or a directory tree).
fn disk_size(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .map(|it| it.flatten().map(|e| disk_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Remove what interrupted saves left: `paths` with their total size, then
/// one line on stderr.
fn remove_leftovers(what: &str, beside: &Path, paths: &[PathBuf]) {
    if paths.is_empty() {
        return;
    }
    let bytes: u64 = paths.iter().map(|p| disk_size(p)).sum();
    let mut removed = Vec::new();
    for p in paths {
        if remove_path(p).is_ok() {
            removed.push(
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    if !removed.is_empty() {
        eprintln!(
            "checkpoint: removed {} {what} of interrupted saves beside {} ({:.1} MB): {}",
            removed.len(),
            beside.display(),
            bytes as f64 / 1e6,
            removed.join(", ")
        );
    }
}

/// Temporary files that interrupted [`write_atomically`] calls of `path` left.
fn remove_leftover_temp_files(path: &Path) {
    let Ok((parent, name)) = parent_and_name(path) else {
        return;
    };
    let stale: Vec<PathBuf> = siblings(&parent, &name)
        .into_iter()
        .filter(|(kind, pid, p)| kind == "tmp" && p.is_file() && !pid_alive(*pid))
        .map(|(_, _, p)| p)
        .collect();
    remove_leftovers("temporary files", path, &stale);
}

/// Bring the directory `dir`, written by [`write_dir_atomically`], to a clean
/// state after interrupted saves (see the [module docs](self)): finish a swap
/// that a kill cut short (a complete `.new-<pid>` becomes `dir`), remove
/// temporary and previous directories, and refuse to guess when only a
/// previous copy is left. `marker` is the file a complete directory holds
/// (a training checkpoint's `checkpoint.json`). Directories of a process
/// that still runs are left alone.
///
/// Called by every [`write_dir_atomically`], and by every load of a
/// training checkpoint ([`crate::train::checkpoint::recover_checkpoint_dir`]).
pub fn recover_dir(dir: impl AsRef<Path>, marker: &str) -> Result<(), FileError> {
    let dir = dir.as_ref();
    let (parent, name) = parent_and_name(dir)?;
    let mut tmps = Vec::new();
    let mut news = Vec::new();
    let mut olds = Vec::new();
    for (kind, pid, path) in siblings(&parent, &name) {
        if pid != std::process::id() && pid_alive(pid) {
            continue; // another process is saving right now
        }
        match kind.as_str() {
            "tmp" => tmps.push(path),
            "new" => news.push(path),
            _ => olds.push(path),
        }
    }
    remove_leftovers("temporary directories", dir, &tmps);
    if news.len() > 1 {
        let names: Vec<String> = news.iter().map(|p| p.display().to_string()).collect();
        return Err(format_err(
            dir,
            format!(
                "several complete checkpoints wait to replace this one ({}): two processes saved here at once; keep the one you want as {} and remove the others",
                names.join(", "),
                dir.display()
            ),
        ));
    }
    if let Some(new) = news.pop() {
        // the save wrote `new` completely, then was killed before or during the swap
        if dir.exists() {
            let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(dir, &aside).map_err(io_err(dir))?;
            olds.push(aside);
        }
        fs::rename(&new, dir).map_err(io_err(dir))?;
        sync_dir(&parent);
        eprintln!(
            "checkpoint: {}: finished an interrupted save (the complete checkpoint {} is now in place)",
            dir.display(),
            new.display()
        );
    }
    if dir.join(marker).is_file() {
        remove_leftovers("previous checkpoint directories", dir, &olds);
        return Ok(());
    }
    if let Some(old) = olds.first() {
        return Err(format_err(
            dir,
            format!(
                "no complete checkpoint here, but an older one is at {}: a save was interrupted in a way this version cannot finish. Check its step (checkpoint.json) and, to use it, move it to {}",
                old.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Read every tensor of a weights file: safetensors (checked first, so a
/// damaged file gets a plain message naming it) or, for other extensions,
/// libtorch's own format.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>, FileError> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(FileError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        check_safetensors(path).map_err(|m| format_err(path, m))?;
        Tensor::read_safetensors(path).map_err(|e| format_err(path, plain_torch_message(&e, path)))
    } else {
        Tensor::load_multi(path).map_err(|e| format_err(path, plain_torch_message(&e, path)))
    }
}

/// Write float tensors (copied to float32 on the CPU) and string metadata
/// (the header's `__metadata__`) as a safetensors file, atomically.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Metadata,
) -> Result<(), FileError> {
    use safetensors::tensor::{Dtype, TensorView};
    let path = path.as_ref();
    let mut data = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let values = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(torch_err(path))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        data.push((name.clone(), shape, bytes));
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_err(path, format!("{e:?}")))?;
    write_atomically(path, |tmp| {
        safetensors::tensor::serialize_to_file(views, &Some(metadata), tmp)
            .map_err(|e| format_err(path, format!("{e:?}")))
    })
}

/// The string metadata of a safetensors header (`__metadata__`).
pub type Metadata = std::collections::HashMap<String, String>;

/// Read a safetensors file's tensors (as [`read_tensors`]) and the string
/// metadata of its header (empty when it has none).
pub fn read_safetensors_with_metadata(
    path: impl AsRef<Path>,
) -> Result<(Vec<(String, Tensor)>, Metadata), FileError> {
    let path = path.as_ref();
    let tensors = read_tensors(path)?;
    let bytes = fs::read(path).map_err(io_err(path))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format_err(path, format!("{e:?}")))?;
    Ok((tensors, header.metadata().clone().unwrap_or_default()))
}

/// tch's message without the path it repeats and without libtorch's C++
/// backtrace.
fn plain_torch_message(e: &tch::TchError, path: &Path) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").to_string();
    first
        .replace(&format!("{}: ", path.display()), "")
        .replace(&path.display().to_string(), "the file")
}

/// Check a safetensors file's framing without reading its tensors: the
/// 8-byte header length, the JSON header, and each tensor's dtype, shape and
/// byte range against the file's size. Returns a message a user can act on
/// (the crate's own errors are internal names such as
/// `MetadataIncompleteBuffer`).
pub fn check_safetensors(path: &Path) -> Result<(), String> {
    safetensors_header(path).map(|_| ())
}

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsEntry {
    /// The dtype as the format names it (`F32`, `BF16`, …).
    pub dtype: String,
    pub shape: Vec<i64>,
    /// The byte range in the file (absolute offsets).
    pub start: u64,
    pub end: u64,
}

/// A safetensors file's header, checked as [`check_safetensors`] does:
/// each tensor's dtype, shape and absolute byte range, by name.
pub fn safetensors_header(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, SafetensorsEntry>, String> {
    use std::io::Read;
    let mut file = fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let truncated = "the file is cut short (an interrupted copy or download?)";
    if len < 8 {
        return Err(format!(
            "not a safetensors file: {len} bytes, fewer than the 8-byte header length; {truncated}"
        ));
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|e| e.to_string())?;
    let header_len = u64::from_le_bytes(n);
    if header_len > 100_000_000 {
        return Err(format!(
            "not a safetensors file: its first 8 bytes give a header of {header_len} bytes (it may be another format, e.g. a PyTorch .pt/.bin file)"
        ));
    }
    if 8 + header_len > len {
        return Err(format!(
            "the safetensors header needs {header_len} bytes but the file has only {} after the length; {truncated}",
            len - 8
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("the safetensors header is not a JSON object: {e}"))?;
    let data_len = len - 8 - header_len;
    let mut entries = std::collections::BTreeMap::new();
    for (key, info) in &header {
        if key == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        let elt: u64 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
            "I16" | "U16" | "F16" | "BF16" => 2,
            "I32" | "U32" | "F32" => 4,
            "I64" | "U64" | "F64" => 8,
            other => return Err(format!("tensor {key:?}: unknown dtype {other:?}")),
        };
        let shape: Option<Vec<u64>> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Err(format!(
                "tensor {key:?}: the header lacks a valid shape or data_offsets"
            ));
        };
        let [start, end] = offsets[..] else {
            return Err(format!("tensor {key:?}: data_offsets must be [start, end]"));
        };
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let expected = numel.and_then(|n| n.checked_mul(elt));
        if end < start || Some(end - start) != expected {
            return Err(format!(
                "tensor {key:?}: {dtype} of shape {shape:?} needs {} bytes, the header gives {start}..{end}",
                expected.map_or("too many".to_string(), |b| b.to_string())
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor {key:?} ends at byte {end} of the data, but the file holds only {data_len} bytes of data; {truncated}"
            ));
        }
        entries.insert(
            key.clone(),
            SafetensorsEntry {
                dtype: dtype.to_string(),
                shape: shape.iter().map(|&d| d as i64).collect(),
                start: 8 + header_len + start,
                end: 8 + header_len + end,
            },
        );
    }
    Ok(entries)
}

/// A short dtype name as Python prints it (`float32`, `float16`, …).
pub(crate) fn dtype_name(kind: Kind) -> String {
    match kind {
        Kind::Float => "float32".into(),
        Kind::Half => "float16".into(),
        Kind::BFloat16 => "bfloat16".into(),
        Kind::Double => "float64".into(),
        Kind::Int64 => "int64".into(),
        Kind::Int => "int32".into(),
        Kind::Uint8 => "uint8".into(),
        Kind::Bool => "bool".into(),
        other => format!("{other:?}"),
    }
}

/// Match `tensors` against the variables of `vs`: every variable present
/// with exactly its shape and dtype, and no tensor that is not a variable.
/// Returns the pairs (variable, tensor) to copy; changes nothing.
pub(crate) fn match_varstore(
    vs: &VarStore,
    tensors: Vec<(String, Tensor)>,
    path: &Path,
) -> Result<Vec<(Tensor, Tensor)>, FileError> {
    let mut file: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut pairs = Vec::with_capacity(vars.len());
    for (name, var) in vars {
        let Some(src) = file.remove(&name) else {
            return Err(format_err(
                path,
                format!(
                    "missing tensor {name:?} (the model has it with shape {:?}); saved from a different model?",
                    var.size()
                ),
            ));
        };
        if src.size() != var.size() {
            return Err(format_err(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, the model expects {:?}",
                    src.size(),
                    var.size()
                ),
            ));
        }
        if src.kind() != var.kind() {
            return Err(format_err(
                path,
                format!(
                    "tensor {name:?} is {}, the model's is {}: convert the file, or build the model in {} (e.g. vs.half())",
                    dtype_name(src.kind()),
                    dtype_name(var.kind()),
                    dtype_name(src.kind())
                ),
            ));
        }
        pairs.push((var, src));
    }
    let mut extra: Vec<(String, Tensor)> = file.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some((name, t)) = extra.first() {
        return Err(format_err(
            path,
            format!(
                "unexpected tensor {name:?} with shape {:?} ({} tensors in the file are not variables of this model); saved from a different model?",
                t.size(),
                extra.len()
            ),
        ));
    }
    Ok(pairs)
}

pub(crate) fn copy_pairs(pairs: &[(Tensor, Tensor)]) {
    tch::no_grad(|| {
        for (var, src) in pairs {
            let mut var = var.shallow_clone();
            var.copy_(src);
        }
    });
}

/// Load every variable of `vs` from `path`. Every variable must be in the
/// file with exactly its shape and dtype (a `[1, 16]` tensor is not
/// broadcast into a `[50, 16]` variable, and float16 weights are not loaded
/// into a float32 model) and the file must hold nothing else; otherwise the
/// error names the file and the tensor, and `vs` is unchanged.
pub fn load_varstore(vs: &mut VarStore, path: impl AsRef<Path>) -> Result<(), FileError> {
    let path = path.as_ref();
    let tensors = read_tensors(path)?;
    let pairs = match_varstore(vs, tensors, path)?;
    copy_pairs(&pairs);
    Ok(())
}

/// Fill the directory `dir` through `write` (which gets a temporary
/// directory beside it), then swap it into place (see the
/// [module docs](self)): at any moment `dir` holds either the complete old
/// directory or the complete new one, and [`recover_dir`] (run by every save
/// and load) finishes what a kill interrupted. `write` must create the file
/// `marker`, which marks a directory as complete.
pub fn write_dir_atomically<F>(dir: &Path, marker: &str, write: F) -> Result<(), FileError>
where
    F: FnOnce(&Path) -> Result<(), FileError>,
{
    let (parent, name) = parent_and_name(dir)?;
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    recover_dir(dir, marker)?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let new = parent.join(format!(".{name}.new-{pid}"));
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
        sync_dir(&tmp);
        // complete: from here on a kill finishes as this checkpoint
        fs::rename(&tmp, &new).map_err(io_err(&new))
    });
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(&parent);
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    fs::rename(&new, dir).map_err(io_err(dir))?;
    sync_dir(&parent);
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind, Tensor};

    #[test]
    fn save_and_load_roundtrip_leaves_no_temp_files() {
        let _rng = crate::rng_lock();
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
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_bytes(&path, b"old").unwrap();
        let err = write_atomically(&path, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(FileError::Torch {
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
        let _rng = crate::rng_lock();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let err = load_varstore(&mut vs, "/nonexistent/model.safetensors").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/model.safetensors"));
    }
}
