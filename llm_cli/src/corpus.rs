//! Text corpora for pretraining: files and directories of `.txt` files,
//! tokenized with GPT-2's BPE on every core, each file split into its
//! training part and its validation tail — the same split for `llm
//! tokenize` (into shards) and `llm pretrain` (from text), so both train
//! on the same batches.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use llm_core::text::shards::encode_parallel;
use llm_core::text::tokenizer::Gpt2Tokenizer;

/// `<|endoftext|>`: put after each file when a corpus has several.
pub const END_OF_TEXT: u32 = 50256;

/// The text files `paths` name: files as given, directories searched for
/// `*.txt` (recursively, sorted). A missing path is an error naming it.
pub fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list the directory", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("{}: cannot list the directory", dir.display()))?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "txt") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = files.len();
            walk(p, &mut files)?;
            if files.len() == before {
                bail!("{}: a directory without .txt files", p.display());
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    if files.is_empty() {
        bail!("no input: give text files or directories (or set `data` in the configuration)");
    }
    Ok(files)
}

/// Where a file's ids are split: the first `(1 - val_fraction)` of them
/// train, the rest validate (notebook ch05b's split of one text).
pub fn split_at(len: usize, val_fraction: f64) -> usize {
    ((1.0 - val_fraction) * len as f64) as usize
}

/// Tokenize each file on `threads` threads and hand its training and
/// validation ids to `sink`, file by file (so a corpus of many files never
/// sits in memory at once).
pub fn for_each_file(
    files: &[PathBuf],
    tokenizer: &Gpt2Tokenizer,
    threads: usize,
    val_fraction: f64,
    mut sink: impl FnMut(&Path, &[u32], &[u32]) -> Result<()>,
) -> Result<()> {
    if !(0.0..1.0).contains(&val_fraction) {
        bail!("setting `val_fraction` = {val_fraction} is out of range; accepted: 0 to below 1");
    }
    let several = files.len() > 1;
    for path in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read it as UTF-8 text", path.display()))?;
        let text = llm_core::data::strip_bom(&text);
        let mut ids = encode_parallel(tokenizer, text, threads)
            .with_context(|| format!("{}: tokenizing", path.display()))?;
        if several {
            ids.push(END_OF_TEXT);
        }
        let at = split_at(ids.len(), val_fraction);
        sink(path, &ids[..at], &ids[at..])?;
    }
    Ok(())
}

/// The number of worker threads: `threads`, or every core when 0.
pub fn threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
