//! Pre-tokenized corpora bigger than memory: token ids as a flat file of
//! little-endian `uint16` (nanoGPT's `train.bin` format), written once with
//! every core ([`encode_parallel`], [`write_shard`]) and memory-mapped for
//! training ([`TokenShard`], [`ShardLoader`]).
//!
//! [`ShardLoader`] cuts the same windows as chapter 2's
//! [`GptDatasetV1`](crate::text::dataset::GptDatasetV1) (starts `0, stride,
//! 2·stride, …`) and draws batches as the same PyTorch `DataLoader`
//! ([`BatchSampler`]), so training from a shard gives the same batches as
//! training from the text it was made of. Only the windows of the batch at
//! hand are read, so a shard of any size trains in little memory.
//!
//! ```
//! use llm_core::text::shards::{write_shard, ShardLoader, TokenShard};
//! use llm_core::text::loader::DataLoader;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("train.bin");
//! let ids: Vec<u32> = (0..100).collect();
//! write_shard(&path, &ids)?;
//! let shard = TokenShard::open(&path)?;
//! assert_eq!(shard.len(), 100);
//! assert_eq!(shard.ids(10..13), [10, 11, 12]);
//! let loader = ShardLoader::new(shard.into(), 0..100, 8, 8, 4)?;
//! let (x, y) = loader.batch_iter().next().unwrap();
//! assert_eq!(x.size(), [4, 8]);
//! assert_eq!(y.int64_value(&[0, 0]), 1); // the targets are the inputs shifted by one
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::Tensor;

use crate::files::{io_err, FileError};
use crate::text::loader::{BatchSampler, DataLoader};
use crate::text::tokenizer::{Tokenizer, TokenizerError};

/// Errors of shard files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {bytes} bytes is not a whole number of uint16 token ids (an odd size: not a shard, or a cut-off copy)")]
    OddSize { path: PathBuf, bytes: u64 },
    #[error("token id {id} at position {position} does not fit a uint16 shard (0..=65535); a vocabulary of {vocab_size} needs a wider format")]
    IdTooLarge {
        id: u32,
        position: usize,
        vocab_size: usize,
    },
    #[error("{name} = 0; accepted: 1 or more")]
    Zero { name: &'static str },
    #[error("tokens {start}..{end} of {path} hold {tokens} tokens: at least max_length + 1 = {} are needed for one window", max_length + 1)]
    TooShort {
        path: PathBuf,
        start: usize,
        end: usize,
        tokens: usize,
        max_length: usize,
    },
    #[error("tokens {start}..{end} are outside {path}, which holds {len}")]
    OutOfRange {
        path: PathBuf,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Write token ids as a `uint16` shard (little-endian, no header),
/// atomically: a crash leaves the old file or the new one.
pub fn write_shard(path: impl AsRef<Path>, ids: &[u32]) -> Result<(), ShardError> {
    let mut writer = ShardWriter::create(path)?;
    writer.push(ids)?;
    writer.finish().map(|_| ())
}

/// A shard written piece by piece (a corpus bigger than memory, one file
/// at a time) into a temporary file that [`ShardWriter::finish`] renames
/// into place; dropped unfinished, it removes the temporary file, so a
/// crash or Ctrl-C never leaves a half-written shard under the real name.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<std::io::BufWriter<fs::File>>,
    written: usize,
}

impl ShardWriter {
    /// Start the shard `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, ShardError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let tmp = crate::files::temp_path_for(&path);
        let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(ShardWriter {
            path,
            tmp,
            out: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            written: 0,
        })
    }

    /// Append `ids`; an id above 65535 is an error naming it and its position.
    pub fn push(&mut self, ids: &[u32]) -> Result<(), ShardError> {
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id > u16::MAX as u32) {
            let vocab_size = ids.iter().max().map_or(0, |&m| m as usize + 1);
            return Err(ShardError::IdTooLarge {
                id,
                position: self.written + i,
                vocab_size,
            });
        }
        let out = self
            .out
            .as_mut()
            .expect("a shard writer is used until finish");
        for chunk in ids.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk
                .iter()
                .flat_map(|&id| (id as u16).to_le_bytes())
                .collect();
            out.write_all(&bytes).map_err(io_err(&self.tmp))?;
        }
        self.written += ids.len();
        Ok(())
    }

    /// Ids written so far.
    pub fn len(&self) -> usize {
        self.written
    }

    /// Whether no id was written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Flush, sync and rename the shard into place; returns its length in ids.
    pub fn finish(mut self) -> Result<usize, ShardError> {
        let out = self.out.take().expect("finish is called once");
        let file = out
            .into_inner()
            .map_err(|e| io_err(&self.tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        Ok(self.written)
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A memory-mapped `uint16` shard: the token ids of a corpus, read only
/// where they are needed.
#[derive(Debug)]
pub struct TokenShard {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl TokenShard {
    /// Map the shard at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ShardError> {
        let path = path.as_ref().to_path_buf();
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let bytes = file.metadata().map_err(io_err(&path))?.len();
        if bytes % 2 != 0 {
            return Err(ShardError::OddSize { path, bytes });
        }
        // SAFETY: the map is read-only; a shard changed by another process
        // while mapped can give wrong ids, never memory unsafety for u16 reads
        // (every bit pattern is a valid u16).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
        Ok(TokenShard { path, map })
    }

    /// The file this shard maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of token ids.
    pub fn len(&self) -> usize {
        self.map.len() / 2
    }

    /// Whether the shard holds no ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids at `range` (panics outside the shard, as slicing).
    pub fn ids(&self, range: Range<usize>) -> Vec<u32> {
        self.map[range.start * 2..range.end * 2]
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
            .collect()
    }
}

/// Windows of a shard as training batches (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct ShardLoader {
    shard: Arc<TokenShard>,
    /// The first token of each window.
    starts: Vec<usize>,
    max_length: usize,
    pub sampler: BatchSampler,
    /// The epoch of a distributed sampler ([`DataLoader::set_epoch`]).
    epoch: std::cell::Cell<u64>,
}

impl ShardLoader {
    /// Windows of `max_length` tokens every `stride` tokens over the
    /// tokens `range` of `shard`, in batches of `batch_size` (in order; set
    /// [`ShardLoader::shuffle`] and [`ShardLoader::drop_last`] as the book's
    /// loaders).
    pub fn new(
        shard: Arc<TokenShard>,
        range: Range<usize>,
        max_length: usize,
        stride: usize,
        batch_size: usize,
    ) -> Result<Self, ShardError> {
        for (name, v) in [
            ("max_length", max_length),
            ("stride", stride),
            ("batch_size", batch_size),
        ] {
            if v == 0 {
                return Err(ShardError::Zero { name });
            }
        }
        if range.end > shard.len() || range.start > range.end {
            return Err(ShardError::OutOfRange {
                path: shard.path.clone(),
                start: range.start,
                end: range.end,
                len: shard.len(),
            });
        }
        let tokens = range.end - range.start;
        if tokens <= max_length {
            return Err(ShardError::TooShort {
                path: shard.path.clone(),
                start: range.start,
                end: range.end,
                tokens,
                max_length,
            });
        }
        let starts: Vec<usize> = (range.start..range.end - max_length)
            .step_by(stride)
            .collect();
        let sampler = BatchSampler::new(starts.len(), batch_size);
        Ok(ShardLoader {
            shard,
            starts,
            max_length,
            sampler,
            epoch: std::cell::Cell::new(0),
        })
    }

    /// Reshuffle the windows every epoch (the book's training loader).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.sampler = self.sampler.shuffle(shuffle);
        self
    }

    /// Drop a last batch smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.sampler = self.sampler.drop_last(drop_last);
        self
    }

    /// Only `rank`'s share of each epoch ([`BatchSampler::distributed`]).
    pub fn distributed(mut self, rank: usize, world_size: usize, seed: u64) -> Self {
        self.sampler = self.sampler.distributed(rank, world_size, seed);
        self
    }

    /// Number of windows.
    pub fn num_windows(&self) -> usize {
        self.starts.len()
    }

    /// The windows `idx` as one `(inputs, targets)` batch.
    fn batch(&self, idx: &[usize]) -> (Tensor, Tensor) {
        let n = self.max_length;
        let mut inputs = Vec::with_capacity(idx.len() * n);
        let mut targets = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            let s = self.starts[i];
            let ids = self.shard.ids(s..s + n + 1);
            inputs.extend(ids[..n].iter().map(|&t| t as i64));
            targets.extend(ids[1..].iter().map(|&t| t as i64));
        }
        let shape = [idx.len() as i64, n as i64];
        (
            Tensor::from_slice(&inputs).view(shape),
            Tensor::from_slice(&targets).view(shape),
        )
    }
}

impl DataLoader for ShardLoader {
    fn num_batches(&self) -> usize {
        self.sampler.num_batches()
    }
    fn batches(&self) -> Vec<(Tensor, Tensor)> {
        self.batch_iter().collect()
    }
    fn batch_iter(&self) -> Box<dyn Iterator<Item = (Tensor, Tensor)> + '_> {
        let epoch = self.sampler.epoch_at(self.epoch.get());
        Box::new(epoch.into_iter().map(|idx| self.batch(&idx)))
    }
    fn set_epoch(&self, epoch: usize) {
        self.epoch.set(epoch as u64);
    }
}

/// Where `text` may be cut so that the pieces tokenize to the same ids as
/// the whole: after a newline that follows a non-space character and comes
/// before a letter. GPT-2's pre-tokenization (and Llama 3's and Qwen's)
/// always ends a piece there: the newline stands alone, and a word never
/// takes a newline as its prefix. Cuts are about `target` bytes apart.
pub fn safe_cuts(text: &str, target: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut cuts = Vec::new();
    let mut from = target.max(1);
    while from < bytes.len() {
        let found = bytes[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| from + p);
        let Some(nl) = found else { break };
        let cut = nl + 1;
        let before_ok = nl > 0 && !bytes[nl - 1].is_ascii_whitespace();
        let after_ok = text[cut..].chars().next().is_some_and(char::is_alphabetic);
        if before_ok && after_ok {
            cuts.push(cut);
            from = cut + target;
        } else {
            from = cut;
        }
    }
    cuts
}

/// Encode `text` on `threads` threads: cut at [`safe_cuts`] into about
/// `4 × threads` pieces, encode them in parallel, and join the ids in order.
/// Gives the ids of `tokenizer.encode(text)` (tested on tiny Shakespeare)
/// for GPT-2-style byte-level BPE tokenizers.
pub fn encode_parallel<T: Tokenizer + Sync + ?Sized>(
    tokenizer: &T,
    text: &str,
    threads: usize,
) -> Result<Vec<u32>, TokenizerError> {
    let threads = threads.max(1);
    let pieces = if threads == 1 { 1 } else { threads * 4 };
    let mut bounds = vec![0];
    bounds.extend(safe_cuts(text, text.len() / pieces + 1));
    bounds.push(text.len());
    let chunks: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Slot = std::sync::Mutex<Option<Result<Vec<u32>, TokenizerError>>>;
    let results: Vec<Slot> = chunks.iter().map(|_| Slot::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(chunks.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(chunk) = chunks.get(i) else { break };
                *results[i].lock().unwrap() = Some(tokenizer.encode(chunk));
            });
        }
    });
    let mut ids = Vec::new();
    for r in results {
        ids.extend(r.into_inner().unwrap().expect("every piece was encoded")?);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_between_a_line_and_a_word() {
        let text = "First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n";
        for cut in safe_cuts(text, 1) {
            assert_eq!(&text[cut - 1..cut], "\n");
            assert!(text[cut..].starts_with(char::is_alphabetic));
            assert!(!text[..cut - 1].ends_with(char::is_whitespace));
        }
        assert_eq!(safe_cuts(text, 1), [15, 40]);
    }

    #[test]
    fn a_wide_id_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_shard(dir.path().join("x.bin"), &[1, 70000]).unwrap_err();
        assert!(
            err.to_string().starts_with("token id 70000 at position 1"),
            "{err}"
        );
        std::fs::write(dir.path().join("odd.bin"), [1u8, 2, 3]).unwrap();
        let err = TokenShard::open(dir.path().join("odd.bin")).unwrap_err();
        assert!(
            err.to_string().contains("3 bytes is not a whole number"),
            "{err}"
        );
    }
}
