//! Named data files: a local directory first, then the user cache, else a
//! verified download from the file's public URL.
//!
//! Every file the notebooks read is listed once in [`FILES`] with its public
//! URL and sha256. [`path`] resolves a name in this order:
//!
//! 1. `$LLM_DATA_DIR/<name>` — a local copy (the test suite points this at
//!    `../shared/data`; point it anywhere to work offline);
//! 2. `<cache>/<name>` where `<cache>` is `$LLM_RS_CACHE/data` (default
//!    `~/.cache/llm-rs/data`) — a file downloaded earlier;
//! 3. a download from the URL into the cache: written to a temporary file,
//!    checked against the sha256, then renamed, so an interrupted download
//!    never leaves a half-written file under the real name.
//!
//! ```no_run
//! let verdict = llm_core::data::read_to_string("the-verdict.txt")?;
//! assert_eq!(verdict.len(), 20479);
//! # Ok::<(), llm_core::data::DataError>(())
//! ```

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::files::{self, io_err, FileError};
use sha2::{Digest, Sha256};

/// One named data file and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// The name (a relative path, also its place under the data dir and cache).
    pub name: &'static str,
    /// Public URL it is downloaded from.
    pub url: &'static str,
    /// When the URL is a zip archive: the file's name inside it.
    pub member: Option<&'static str>,
    /// Expected sha256 (hex) of the file's bytes.
    pub sha256: &'static str,
    /// Expected size in bytes.
    pub bytes: u64,
    /// Source and licence, in one line.
    pub licence: &'static str,
}

/// Every data file the project uses. Sizes and hashes are those in
/// `shared/data/SOURCES.md`.
pub const FILES: &[DataFile] = &[
    DataFile {
        name: "the-verdict.txt",
        url: "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        member: None,
        sha256: "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        bytes: 20479,
        licence: "Edith Wharton, The Verdict (1908), public domain; via rasbt/LLMs-from-scratch",
    },
    DataFile {
        name: "small-text-sample.txt",
        url: "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch03/01_main-chapter-code/small-text-sample.txt",
        member: None,
        sha256: "53097adce031851aed63c9eb44b1e74a5e8581ccaba118a97ce5ce6cc84b811b",
        bytes: 1962,
        licence: "rasbt/LLMs-from-scratch, Apache-2.0",
    },
    DataFile {
        name: "tinyshakespeare.txt",
        url: "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        member: None,
        sha256: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        bytes: 1115394,
        licence: "Shakespeare, public domain; via karpathy/char-rnn (MIT)",
    },
    DataFile {
        name: "gpt2/encoder.json",
        url: "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        member: None,
        sha256: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        bytes: 1042301,
        licence: "OpenAI GPT-2 release, Modified MIT",
    },
    DataFile {
        name: "gpt2/vocab.bpe",
        url: "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        member: None,
        sha256: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        bytes: 456318,
        licence: "OpenAI GPT-2 release, Modified MIT",
    },
    DataFile {
        name: "instruction-data.json",
        url: "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        member: None,
        sha256: "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
        bytes: 203524,
        licence: "rasbt/LLMs-from-scratch, Apache-2.0",
    },
    DataFile {
        name: "instruction-data-with-response.json",
        url: "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data-with-response.json",
        member: None,
        sha256: "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943",
        bytes: 29279,
        licence: "rasbt/LLMs-from-scratch, Apache-2.0 (the test set with the responses of the book's fine-tuned GPT-2 medium)",
    },
    DataFile {
        name: "instruction-data-with-preference.json",
        url: "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
        member: None,
        sha256: "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
        bytes: 386968,
        licence: "rasbt/LLMs-from-scratch, Apache-2.0 (chosen/rejected answers generated with Llama 3.1 through Ollama; Llama licence terms apply to derived models)",
    },
    DataFile {
        name: "sms_spam_collection/SMSSpamCollection.tsv",
        url: "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        member: Some("SMSSpamCollection"),
        sha256: "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        bytes: 477907,
        licence: "UCI SMS Spam Collection v.1 (Almeida, Gómez Hidalgo, Yamakami 2011), CC BY 4.0",
    },
];

/// Errors from resolving, reading or downloading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown data file {name:?}; known files: {known}")]
    Unknown { name: String, known: String },
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    #[error("download of {url} failed: {reason} (offline? put the file at {hint})")]
    Download {
        url: String,
        reason: String,
        hint: PathBuf,
    },
    #[error("{path}: this copy of {name} is not the published file ({bytes} bytes, sha256 {actual}; expected {expected_bytes} bytes, sha256 {expected}): it is cut short, damaged or another version. Replace it, or delete it to download it again from {url}")]
    Damaged {
        path: PathBuf,
        name: &'static str,
        url: &'static str,
        bytes: u64,
        expected_bytes: u64,
        actual: String,
        expected: &'static str,
    },
    /// The server has no such file (HTTP 404).
    #[error("{url}: no such file on the server (HTTP 404)")]
    NotFound { url: String },
    /// The server refused (HTTP 401 or 403): a gated model.
    #[error("{url}: the hub refused the download (HTTP {status}). {repo} is gated: accept its licence at https://huggingface.co/{repo} while logged in, create an access token at https://huggingface.co/settings/tokens and set HF_TOKEN to it{token_note}; or put the files in {hint}")]
    Refused {
        url: String,
        status: u16,
        repo: String,
        token_note: &'static str,
        hint: PathBuf,
    },
    #[error("{path}: sha256 {actual} does not match the expected {expected} (downloaded from {url}); the file was not kept")]
    Checksum {
        path: PathBuf,
        url: String,
        expected: String,
        actual: String,
    },
}

/// Look a file up in [`FILES`] by name.
pub fn find(name: &str) -> Result<&'static DataFile, DataError> {
    FILES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| DataError::Unknown {
            name: name.to_string(),
            known: FILES.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
        })
}

/// Where files are looked up and downloaded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataStore {
    /// A local directory searched first (`LLM_DATA_DIR`).
    pub local_dir: Option<PathBuf>,
    /// Where downloads go.
    pub cache_dir: PathBuf,
    /// Print a line when downloading.
    pub verbose: bool,
}

/// The default cache directory: `$LLM_RS_CACHE/data`, else
/// `$XDG_CACHE_HOME/llm-rs/data`, else `~/.cache/llm-rs/data`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("LLM_RS_CACHE") {
        return PathBuf::from(c).join("data");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("llm-rs").join("data");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("llm-rs").join("data")
}

impl DataStore {
    /// The store configured from the environment (`LLM_DATA_DIR`, `LLM_RS_CACHE`).
    pub fn from_env() -> Self {
        DataStore {
            local_dir: std::env::var_os("LLM_DATA_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            cache_dir: default_cache_dir(),
            verbose: true,
        }
    }

    /// Resolve a file to a path on disk, downloading it if needed. A local
    /// or cached copy is checked against the file's size and sha256 (the
    /// hash once per copy: a stamp under `<cache>/.verified` remembers a
    /// verified size and modification time), so a damaged copy is an error
    /// naming it rather than a tokenizer or data set that silently differs.
    pub fn path(&self, file: &DataFile) -> Result<PathBuf, DataError> {
        if let Some(dir) = &self.local_dir {
            let p = dir.join(file.name);
            if p.is_file() {
                self.verify(file, &p)?;
                return Ok(p);
            }
        }
        let cached = self.cache_dir.join(file.name);
        if cached.is_file() {
            self.verify(file, &cached)?;
            return Ok(cached);
        }
        if self.verbose {
            println!(
                "downloading {} from {} ({} bytes)",
                file.name, file.url, file.bytes
            );
        }
        match file.member {
            None => download(file.url, &cached, Some(file.sha256))?,
            Some(member) => {
                let archive =
                    cached.with_file_name(format!(".download-{}.zip", std::process::id()));
                let result = download(file.url, &archive, None).and_then(|()| {
                    extract_member(&archive, member, &cached, file.sha256, file.url)
                });
                let _ = fs::remove_file(&archive);
                result?;
            }
        }
        Ok(cached)
    }

    /// Check a copy of `file` at `path`: its size always, its sha256 unless a
    /// stamp says this very copy (same path, size and modification time)
    /// was verified before.
    fn verify(&self, file: &DataFile, path: &Path) -> Result<(), DataError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let key = hex(&Sha256::digest(abs.to_string_lossy().as_bytes()));
        let stamp = self.cache_dir.join(".verified").join(&key[..32]);
        let expected_stamp = format!(
            "{} {} {} {}\n",
            meta.len(),
            mtime,
            file.sha256,
            abs.display()
        );
        if meta.len() == file.bytes && fs::read_to_string(&stamp).is_ok_and(|s| s == expected_stamp)
        {
            return Ok(());
        }
        let actual = sha256_file(path)?;
        if meta.len() != file.bytes || !actual.eq_ignore_ascii_case(file.sha256) {
            return Err(DataError::Damaged {
                path: path.to_path_buf(),
                name: file.name,
                url: file.url,
                bytes: meta.len(),
                expected_bytes: file.bytes,
                actual,
                expected: file.sha256,
            });
        }
        // only a cache: a read-only cache dir just means hashing again next time
        if let Some(dir) = stamp.parent() {
            let _ = fs::create_dir_all(dir);
        }
        // a torn stamp only fails to match next time (and the file is hashed again)
        let _ = fs::write(&stamp, expected_stamp.as_bytes());
        Ok(())
    }
}

/// Resolve a named file (see the module docs for the search order).
pub fn path(name: &str) -> Result<PathBuf, DataError> {
    DataStore::from_env().path(find(name)?)
}

/// Read a named file as UTF-8 text.
pub fn read_to_string(name: &str) -> Result<String, DataError> {
    let p = path(name)?;
    Ok(fs::read_to_string(&p).map_err(io_err(&p))?)
}

/// `text` without a leading UTF-8 byte-order mark (which some editors on
/// Windows write at the start of a file). JSON and CSV readers strip it, as
/// Python's `utf-8-sig` does, so the first line is read as written.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extract `member` from the zip `archive` into `dest`: written to a
/// temporary file, checked against `sha256`, then renamed into place.
fn extract_member(
    archive: &Path,
    member: &str,
    dest: &Path,
    sha256: &str,
    url: &str,
) -> Result<(), DataError> {
    let bad = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
        hint: dest.to_path_buf(),
    };
    let f = fs::File::open(archive).map_err(io_err(archive))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| bad(format!("no {member:?} in the archive: {e}")))?;
    files::write_atomically(dest, |tmp| {
        let mut out = fs::File::create(tmp).map_err(io_err(tmp))?;
        io::copy(&mut entry, &mut out).map_err(io_err(tmp))?;
        let actual = sha256_file(tmp)?;
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(DataError::Checksum {
                path: dest.to_path_buf(),
                url: format!("{url} ({member})"),
                expected: sha256.to_string(),
                actual,
            });
        }
        Ok(())
    })
}

/// Download `url` to `dest`: into `<dest>.partial` beside it first, check
/// the sha256 (the one given, else the one the server states in
/// `x-linked-etag`, as Hugging Face does for large files), then rename into
/// place. A download cut short (a lost connection, Ctrl-C) leaves the
/// `.partial` file, and the next call resumes it with an HTTP range request
/// (or starts again when the server does not support ranges); a file whose
/// checksum does not match is removed. `dest` itself only ever holds a
/// complete, checked file.
pub fn download(url: &str, dest: &Path, sha256: Option<&str>) -> Result<(), DataError> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let partial = partial_path(dest);
    let (actual, stated) = fetch_into(url, &partial, dest)?;
    if let Some(expected) = sha256.map(str::to_string).or(stated) {
        if !actual.eq_ignore_ascii_case(&expected) {
            let _ = fs::remove_file(&partial);
            return Err(DataError::Checksum {
                path: dest.to_path_buf(),
                url: url.to_string(),
                expected,
                actual,
            });
        }
    }
    fs::rename(&partial, dest).map_err(io_err(dest))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::sync_dir(dir);
    }
    Ok(())
}

/// Where [`download`] writes `dest` until it is complete and checked.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Stream the body into `partial` (resuming what it holds when the server
/// takes a range request), returning the whole file's sha256 and the
/// sha256 the server states for it (Hugging Face sends a Git LFS file's in
/// `x-linked-etag`).
fn fetch_into(
    url: &str,
    partial: &Path,
    dest: &Path,
) -> Result<(String, Option<String>), DataError> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
        hint: dest.to_path_buf(),
    };
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    if offline() && !loopback {
        return Err(fail("downloads are off (LLM_OFFLINE is set)".to_string()));
    }
    let have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = ureq::get(url);
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    if let Some(token) = token
        .as_ref()
        .filter(|_| url.starts_with("https://huggingface.co/"))
    {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        // the partial file already holds everything
        Err(ureq::Error::StatusCode(416)) if have > 0 => {
            return Ok((sha256_file(partial)?, None));
        }
        Err(e) => {
            return Err(match e {
                ureq::Error::StatusCode(404) => DataError::NotFound {
                    url: url.to_string(),
                },
                ureq::Error::StatusCode(status @ (401 | 403)) => DataError::Refused {
                    url: url.to_string(),
                    status,
                    repo: url
                        .trim_start_matches("https://huggingface.co/")
                        .split("/resolve/")
                        .next()
                        .unwrap_or(url)
                        .to_string(),
                    token_note: if token.is_some() {
                        " (HF_TOKEN is set: is access to this model granted to its account?)"
                    } else {
                        " (HF_TOKEN is not set)"
                    },
                    hint: dest.parent().unwrap_or(dest).to_path_buf(),
                },
                e => fail(e.to_string()),
            })
        }
    };
    let resumed = have > 0 && response.status().as_u16() == 206;
    let stated = response
        .headers()
        .get("x-linked-etag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_ascii_lowercase())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let start = if resumed { have } else { 0 };
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n + start);
    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut out = if resumed {
        let mut f = fs::File::open(partial).map_err(io_err(partial))?;
        io::copy(&mut f, &mut hasher).map_err(io_err(partial))?;
        fs::OpenOptions::new()
            .append(true)
            .open(partial)
            .map_err(io_err(partial))?
    } else {
        fs::File::create(partial).map_err(io_err(partial))?
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut done: u64 = start;
    let mut progress = (total.unwrap_or(0) > 50_000_000)
        .then(|| crate::progress::Progress::new("download", total.unwrap_or(0) as usize));
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(io_err(partial))?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if let Some(p) = progress.as_mut() {
            p.set_position(done as usize);
        }
    }
    out.sync_all().map_err(io_err(partial))?;
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    if let Some(t) = total {
        if t != done {
            return Err(fail(format!(
                "got {done} of {t} bytes; the next try resumes from {}",
                partial.display()
            )));
        }
    }
    Ok((hex(&hasher.finalize()), stated))
}

/// True when `LLM_OFFLINE` is set (to anything but `0` or empty): no file is
/// downloaded, a missing one is an error at once. The test suite sets it.
pub fn offline() -> bool {
    std::env::var("LLM_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The Hugging Face repositories of OpenAI's four GPT-2 sizes, under the
/// book's names ([`crate::model::gpt::MODEL_NAMES`]).
pub const GPT2_REPOS: [(&str, &str); 4] = [
    ("gpt2-small (124M)", "openai-community/gpt2"),
    ("gpt2-medium (355M)", "openai-community/gpt2-medium"),
    ("gpt2-large (774M)", "openai-community/gpt2-large"),
    ("gpt2-xl (1558M)", "openai-community/gpt2-xl"),
];

/// The directory holding `config.json` and `model.safetensors` of one of
/// OpenAI's GPT-2 models (`model_name` as in the book, e.g.
/// `"gpt2-small (124M)"`, or the repository name, e.g. `"openai-community/gpt2"`),
/// for [`crate::model::gpt2_weights::load_gpt2`].
///
/// Looked up as every data file: `$LLM_DATA_DIR/<repo>/`, then the cache,
/// else downloaded from `https://huggingface.co/<repo>/resolve/main/` with a
/// progress line (498 MB for the 124M model), checked against the sha256
/// the hub states, and renamed into place only when complete.
///
/// ```no_run
/// let dir = llm_core::data::gpt2_weights_dir("gpt2-small (124M)")?;
/// assert!(dir.join("model.safetensors").is_file());
/// # Ok::<(), llm_core::data::DataError>(())
/// ```
pub fn gpt2_weights_dir(model_name: &str) -> Result<PathBuf, DataError> {
    let repo = GPT2_REPOS
        .iter()
        .find(|(name, repo)| *name == model_name || *repo == model_name)
        .map(|(_, repo)| *repo)
        .ok_or_else(|| DataError::Unknown {
            name: model_name.to_string(),
            known: GPT2_REPOS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    DataStore::from_env().hf_dir(repo, &["config.json", "model.safetensors"])
}

impl DataStore {
    /// A directory of files from a Hugging Face repository (see
    /// [`gpt2_weights_dir`]): the local copy when it has every file, else
    /// the cache, downloading what is missing.
    pub fn hf_dir(&self, repo: &str, files: &[&str]) -> Result<PathBuf, DataError> {
        let complete = |dir: &Path| files.iter().all(|f| dir.join(f).is_file());
        if let Some(local) = &self.local_dir {
            let dir = local.join(repo);
            if complete(&dir) {
                return Ok(dir);
            }
        }
        let dir = self.cache_dir.join(repo);
        for f in files {
            let dest = dir.join(f);
            if dest.is_file() {
                continue;
            }
            let url = format!("https://huggingface.co/{repo}/resolve/main/{f}");
            if self.verbose {
                println!("downloading {repo}/{f} from {url}");
            }
            download(&url, &dest, None)?;
        }
        Ok(dir)
    }
}

/// The open-weight models of the ch. 5 bonus that
/// [`open_model_dir`] knows (any other Hugging Face repository of a Llama 3
/// or Qwen3 model works too). The Llama repositories are gated: they need
/// `HF_TOKEN` (see [`DataError::Refused`]).
pub const OPEN_MODEL_REPOS: [&str; 6] = [
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-0.6B-Base",
    "Qwen/Qwen3-1.7B",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B-Instruct",
];

/// The directory of a Llama 3 or Qwen3 model from Hugging Face (`repo` such
/// as `"Qwen/Qwen3-0.6B"`): `config.json`, `tokenizer.json` and the
/// weights, one `model.safetensors` or the shards its
/// `model.safetensors.index.json` lists, for
/// [`crate::model::hf_weights::load_open_model`].
///
/// Looked up as every data file: `$LLM_DATA_DIR/<repo>/` when it holds
/// every file, then the cache, else downloaded from
/// `https://huggingface.co/<repo>/resolve/main/` with a progress line, each
/// file checked against the sha256 the hub states and renamed into place
/// only when complete (an interrupted download resumes where it stopped,
/// see [`download`]). `HF_TOKEN` is sent to the hub when
/// set, which the gated Llama models need. Offline (`LLM_OFFLINE`), a
/// missing file is an error naming where to put it.
pub fn open_model_dir(repo: &str) -> Result<PathBuf, DataError> {
    DataStore::from_env().open_model_dir(repo)
}

impl DataStore {
    /// [`open_model_dir`] in this store.
    pub fn open_model_dir(&self, repo: &str) -> Result<PathBuf, DataError> {
        let complete = |dir: &Path| -> bool {
            let base = ["config.json", "tokenizer.json"]
                .iter()
                .all(|f| dir.join(f).is_file());
            base && (dir.join("model.safetensors").is_file()
                || shards(dir).is_some_and(|s| s.iter().all(|f| dir.join(f).is_file())))
        };
        if let Some(local) = &self.local_dir {
            let dir = local.join(repo);
            if complete(&dir) {
                return Ok(dir);
            }
        }
        let dir = self.cache_dir.join(repo);
        if complete(&dir) {
            return Ok(dir);
        }
        let hint = self
            .local_dir
            .as_ref()
            .unwrap_or(&self.cache_dir)
            .join(repo);
        let get = |f: &str| -> Result<(), DataError> {
            let dest = dir.join(f);
            if dest.is_file() {
                return Ok(());
            }
            let url = format!("https://huggingface.co/{repo}/resolve/main/{f}");
            if self.verbose && !offline() {
                println!("downloading {repo}/{f}");
            }
            download(&url, &dest, None).map_err(|e| match e {
                DataError::Download { url, reason, .. } => DataError::Download {
                    url,
                    reason: format!(
                        "{reason}; a copy made elsewhere works: put {repo}/ (config.json, tokenizer.json and the safetensors) in the directory LLM_DATA_DIR names"
                    ),
                    hint: hint.join(f),
                },
                other => other,
            })
        };
        get("config.json")?;
        get("tokenizer.json")?;
        match get("model.safetensors.index.json") {
            Ok(()) => {
                let names = shards(&dir).ok_or_else(|| DataError::Download {
                    url: format!(
                        "https://huggingface.co/{repo}/resolve/main/model.safetensors.index.json"
                    ),
                    reason: "the index lists no shards (no weight_map)".into(),
                    hint: hint.clone(),
                })?;
                for f in names {
                    get(&f)?;
                }
            }
            Err(DataError::NotFound { .. }) => get("model.safetensors")?,
            Err(e) => return Err(e),
        }
        Ok(dir)
    }
}

/// The shard files a `model.safetensors.index.json` in `dir` lists.
fn shards(dir: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(dir.join("model.safetensors.index.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut files: Vec<String> = json
        .get("weight_map")?
        .as_object()?
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread;

    /// A one-shot HTTP server on 127.0.0.1 that answers every request with `body`.
    fn serve(body: &'static [u8], requests: usize) -> String {
        serve_with(body, requests, "")
    }

    /// [`serve`] with extra header lines (each ending in `\r\n`).
    fn serve_with(body: &'static [u8], requests: usize, headers: &'static str) -> String {
        serve_status(body, requests, "200 OK", headers)
    }

    /// [`serve_with`] with another status line.
    fn serve_status(
        body: &'static [u8],
        requests: usize,
        status: &'static str,
        headers: &'static str,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(body).unwrap();
            }
        });
        format!("http://{addr}/file.txt")
    }

    const BODY: &[u8] = b"I HAD always thought Jack Gisburn rather a cheap genius";

    fn sha(b: &[u8]) -> String {
        hex(&Sha256::digest(b))
    }

    #[test]
    fn download_verifies_and_renames() {
        let _rng = crate::rng_lock();
        let url = serve(BODY, 1);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/file.txt");
        download(&url, &dest, Some(&sha(BODY))).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), BODY);
        // nothing else left behind
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_partial_download_is_resumed() {
        let _rng = crate::rng_lock();
        let (head, tail) = BODY.split_at(20);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("file.txt");
        fs::write(partial_path(&dest), head).unwrap();
        // a server that takes the range request sends only the rest
        let url = serve_status(tail_static(tail), 1, "206 Partial Content", "");
        download(&url, &dest, Some(&sha(BODY))).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), BODY);
        assert!(!partial_path(&dest).exists());
        // one that ignores it sends everything: the download starts again
        fs::remove_file(&dest).unwrap();
        fs::write(partial_path(&dest), b"stale bytes").unwrap();
        download(&serve(BODY, 1), &dest, Some(&sha(BODY))).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), BODY);
    }

    fn tail_static(t: &[u8]) -> &'static [u8] {
        Box::leak(t.to_vec().into_boxed_slice())
    }

    #[test]
    fn open_model_dirs_are_found_locally_or_named_in_the_error() {
        let _rng = crate::rng_lock();
        let local = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let store = DataStore {
            local_dir: Some(local.path().to_path_buf()),
            cache_dir: cache.path().to_path_buf(),
            verbose: false,
        };
        // a sharded model, complete in LLM_DATA_DIR
        let dir = local.path().join("Qwen/Qwen3-4B");
        fs::create_dir_all(&dir).unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "a.safetensors",
            "b.safetensors",
        ] {
            fs::write(dir.join(f), "x").unwrap();
        }
        let index = r#"{"weight_map": {"w1": "a.safetensors", "w2": "b.safetensors"}}"#;
        fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
        assert_eq!(store.open_model_dir("Qwen/Qwen3-4B").unwrap(), dir);
        // one shard missing: not complete, and unreachable here, so the error says where to put it
        fs::remove_file(dir.join("b.safetensors")).unwrap();
        let err = store
            .open_model_dir("Qwen/Qwen3-4B")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&local.path().join("Qwen/Qwen3-4B").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn bad_checksum_keeps_nothing() {
        let _rng = crate::rng_lock();
        let url = serve(BODY, 1);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("file.txt");
        let err = download(&url, &dest, Some(&"0".repeat(64))).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("file.txt"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_servers_stated_sha256_is_checked() {
        let _rng = crate::rng_lock();
        let good = serve_with(
            BODY,
            1,
            Box::leak(format!("x-linked-etag: \"{}\"\r\n", sha(BODY)).into_boxed_str()),
        );
        let dir = tempfile::tempdir().unwrap();
        download(&good, &dir.path().join("good.bin"), None).unwrap();
        let bad = serve_with(BODY, 1, "x-linked-etag: \"0000000000000000000000000000000000000000000000000000000000000000\"\r\n");
        let err = download(&bad, &dir.path().join("bad.bin"), None).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(!dir.path().join("bad.bin").exists());
    }

    #[test]
    fn gpt2_dir_is_found_locally_by_book_name_or_repo() {
        let _rng = crate::rng_lock();
        let local = tempfile::tempdir().unwrap();
        let repo = local.path().join("openai-community/gpt2");
        fs::create_dir_all(&repo).unwrap();
        for f in ["config.json", "model.safetensors"] {
            fs::write(repo.join(f), b"x").unwrap();
        }
        let store = DataStore {
            local_dir: Some(local.path().to_path_buf()),
            cache_dir: local.path().join("cache"),
            verbose: false,
        };
        assert_eq!(
            store
                .hf_dir(
                    "openai-community/gpt2",
                    &["config.json", "model.safetensors"]
                )
                .unwrap(),
            repo
        );
        let err = gpt2_weights_dir("gpt2-tiny").unwrap_err().to_string();
        assert!(
            err.contains("gpt2-tiny") && err.contains("gpt2-small (124M)"),
            "{err}"
        );
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let _rng = crate::rng_lock();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener); // nothing listens there now
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.txt");
        let err = download(&format!("http://{addr}/x.txt"), &dest, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("download of http://127.0.0.1") && msg.contains("x.txt"),
            "{msg}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn store_prefers_local_then_cache_then_download() {
        let _rng = crate::rng_lock();
        let url: &'static str = Box::leak(serve(BODY, 1).into_boxed_str());
        let file = DataFile {
            name: "nested/file.txt",
            url,
            member: None,
            sha256: Box::leak(sha(BODY).into_boxed_str()),
            bytes: BODY.len() as u64,
            licence: "test",
        };
        let local = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let store = DataStore {
            local_dir: Some(local.path().to_path_buf()),
            cache_dir: cache.path().to_path_buf(),
            verbose: false,
        };
        // 1. not local, not cached: downloaded into the cache
        let p = store.path(&file).unwrap();
        assert_eq!(p, cache.path().join("nested/file.txt"));
        // 2. cached: no second request (the server only answers one)
        assert_eq!(store.path(&file).unwrap(), p);
        // 3. a local copy wins
        fs::create_dir_all(local.path().join("nested")).unwrap();
        let local_copy = local.path().join("nested/file.txt");
        fs::write(&local_copy, BODY).unwrap();
        assert_eq!(store.path(&file).unwrap(), local_copy);
        // verified once: the stamp remembers this copy
        let stamps = cache.path().join(".verified");
        assert_eq!(fs::read_dir(&stamps).unwrap().count(), 2);
        assert_eq!(store.path(&file).unwrap(), local_copy);
    }

    #[test]
    fn a_damaged_local_copy_is_named_never_used() {
        let _rng = crate::rng_lock();
        let file = DataFile {
            name: "vocab.bpe",
            url: "http://127.0.0.1:9/vocab.bpe",
            member: None,
            sha256: Box::leak(sha(BODY).into_boxed_str()),
            bytes: BODY.len() as u64,
            licence: "test",
        };
        let local = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let store = DataStore {
            local_dir: Some(local.path().to_path_buf()),
            cache_dir: cache.path().to_path_buf(),
            verbose: false,
        };
        let copy = local.path().join("vocab.bpe");
        // cut in half, then the right size with one byte changed (after a
        // verified copy: the stamp must not hide the change)
        fs::write(&copy, &BODY[..BODY.len() / 2]).unwrap();
        let err = store.path(&file).unwrap_err().to_string();
        assert!(err.contains(&copy.display().to_string()), "{err}");
        assert!(
            err.contains("cut short, damaged or another version"),
            "{err}"
        );
        fs::write(&copy, BODY).unwrap();
        store.path(&file).unwrap();
        let mut changed = BODY.to_vec();
        changed[0] ^= 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&copy, &changed).unwrap();
        let err = store.path(&file).unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
    }

    #[test]
    fn a_member_is_extracted_from_a_zip_and_checked() {
        let _rng = crate::rng_lock();
        use std::io::Write as _;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::FileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("inner.txt", opts).unwrap();
            w.write_all(BODY).unwrap();
            w.finish().unwrap();
        }
        let zipped: &'static [u8] = Box::leak(buf.into_inner().into_boxed_slice());
        let url: &'static str = Box::leak(serve(zipped, 1).into_boxed_str());
        let file = DataFile {
            name: "sub/inner.txt",
            url,
            member: Some("inner.txt"),
            sha256: Box::leak(sha(BODY).into_boxed_str()),
            bytes: BODY.len() as u64,
            licence: "test",
        };
        let cache = tempfile::tempdir().unwrap();
        let store = DataStore {
            local_dir: None,
            cache_dir: cache.path().to_path_buf(),
            verbose: false,
        };
        let p = store.path(&file).unwrap();
        assert_eq!(fs::read(&p).unwrap(), BODY);
        // only the extracted file is left
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn unknown_name_lists_known_files() {
        let _rng = crate::rng_lock();
        let err = find("the-verdikt.txt").unwrap_err().to_string();
        assert!(
            err.contains("the-verdikt.txt") && err.contains("the-verdict.txt"),
            "{err}"
        );
    }

    #[test]
    fn table_matches_shared_data_when_present() {
        let _rng = crate::rng_lock();
        let Some(dir) = std::env::var_os("LLM_DATA_DIR").map(PathBuf::from) else {
            return;
        };
        for f in FILES {
            let p = dir.join(f.name);
            if p.is_file() {
                assert_eq!(fs::metadata(&p).unwrap().len(), f.bytes, "{}", f.name);
                assert_eq!(sha256_file(&p).unwrap(), f.sha256, "{}", f.name);
            }
        }
    }
}
