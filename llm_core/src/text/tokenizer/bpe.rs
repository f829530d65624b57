//! Byte pair encoding from scratch (the chapter's bonus material, in the
//! manner of Karpathy's minbpe): train a vocabulary, encode, decode, and save
//! and load GPT-2's own file format.
//!
//! How it works:
//!
//! - **Bytes first.** Text is UTF-8 bytes; the 256 byte values are the first
//!   256 tokens, so every text can be encoded and nothing is ever unknown.
//! - **Pre-tokenization.** The text is first cut into pieces with GPT-2's
//!   regex [`GPT2_SPLIT_PATTERN`] (words with their leading space, numbers,
//!   punctuation runs, whitespace); merges never cross a piece boundary.
//!   Special tokens such as `<|endoftext|>` are cut out before that.
//! - **Training** ([`BpeTokenizer::train`]) repeatedly finds the most frequent
//!   adjacent pair of tokens and merges it into a new token, recording the
//!   merges in order. Pair counts are kept over the *distinct* pieces
//!   weighted by how often each occurs, and updated only for the pieces a
//!   merge touches, so a merge costs time in proportion to those pieces,
//!   not to the corpus.
//! - **Encoding** applies, in each piece, the merge of lowest rank (learned
//!   earliest) among its adjacent pairs, until none applies. Pieces seen
//!   before come from a cache.
//! - **Files.** [`BpeTokenizer::save`] writes `encoder.json` and `vocab.bpe`
//!   exactly in GPT-2's format, and [`BpeTokenizer::from_files`] reads them,
//!   so OpenAI's own files load into this encoder and give tiktoken's ids.
//!
//! ```
//! use llm_core::text::tokenizer::{BpeTokenizer, Tokenizer};
//!
//! let text = "the cat sat on the mat; the cat ate the rat. <|endoftext|> the end";
//! let tokenizer = BpeTokenizer::train(text, 256 + 5 + 1, &["<|endoftext|>"])?;
//! assert_eq!(tokenizer.merges().len(), 5);
//! assert_eq!(tokenizer.vocab_size(), 262);
//! let ids = tokenizer.encode("the cat<|endoftext|>")?;
//! assert_eq!(ids.last(), Some(&261)); // the special token, after the merges
//! assert_eq!(tokenizer.decode(&ids)?, "the cat<|endoftext|>");
//! # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::{Mutex, TryLockError};

use super::byte_level::{
    check_vocabulary, decode_token, encode_token, read_encoder_json, read_vocab_bpe, MergeLine,
};
use super::{compile, regex_err, Result, Tokenizer, TokenizerError};

/// GPT-2's pre-tokenization regex: contractions, words and numbers with an
/// optional leading space, runs of other symbols, and whitespace (a run of
/// spaces before a word leaves its last space to the word).
pub const GPT2_SPLIT_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Pieces longer than this (in bytes) are merged with a heap instead of
/// rescanning ([`BpeTokenizer::apply_merges`]).
const LONG_PIECE: usize = 64;

/// Pieces cached by the encoder before the cache is emptied.
const CACHE_CAPACITY: usize = 1 << 17;

/// The Fx hash (as in rustc): much faster than the default SipHash for the
/// small keys here, and deterministic.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
type FxSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// One learned merge: the adjacent tokens `pair` become token `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Merge {
    /// The left and right token ids.
    pub pair: (u32, u32),
    /// The id of the merged token.
    pub id: u32,
}

/// A vocabulary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An ordinary token: a byte sequence.
    Bytes(Vec<u8>),
    /// A special token, matched literally in the text.
    Special(String),
}

/// A byte-level BPE tokenizer: trained here ([`BpeTokenizer::train`]) or
/// loaded from GPT-2's files ([`BpeTokenizer::from_files`],
/// [`BpeTokenizer::gpt2`]).
///
/// [`Tokenizer::encode`] recognises the special tokens anywhere in the text
/// (as tiktoken's `allowed_special="all"`); [`BpeTokenizer::encode_ordinary`]
/// treats them as plain text.
pub struct BpeTokenizer {
    pattern: fancy_regex::Regex,
    specials_pattern: Option<fancy_regex::Regex>,
    /// Entry `id`; `None` for ids the vocabulary skips.
    vocab: Vec<Option<Token>>,
    byte_to_id: [u32; 256],
    merges: Vec<Merge>,
    /// pair → (rank, merged id)
    ranks: FxMap<(u32, u32), (u32, u32)>,
    special_tokens: Vec<(String, u32)>,
    special_ids: HashMap<String, u32>,
    /// Token strings as in `encoder.json` → id.
    str_to_id: HashMap<String, u32>,
    /// Encoded pieces, by piece: one cache per thread that may encode at
    /// once (see [`crate::text::shards::encode_parallel`]).
    cache: Box<[Mutex<PieceCache>]>,
}

/// Encoded pieces, by piece.
type PieceCache = FxMap<String, Vec<u32>>;

/// One empty piece cache per core.
fn new_caches() -> Box<[Mutex<PieceCache>]> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).map(|_| Mutex::new(FxMap::default())).collect()
}

impl fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BpeTokenizer")
            .field("vocab_size", &self.vocab.len())
            .field("merges", &self.merges.len())
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl Clone for BpeTokenizer {
    fn clone(&self) -> Self {
        BpeTokenizer {
            pattern: self.pattern.clone(),
            specials_pattern: self.specials_pattern.clone(),
            vocab: self.vocab.clone(),
            byte_to_id: self.byte_to_id,
            merges: self.merges.clone(),
            ranks: self.ranks.clone(),
            special_tokens: self.special_tokens.clone(),
            special_ids: self.special_ids.clone(),
            str_to_id: self.str_to_id.clone(),
            cache: new_caches(),
        }
    }
}

/// Replace every occurrence of `pair` in `ids`, left to right, by `id`.
fn merge_pair(ids: &mut Vec<u32>, pair: (u32, u32), id: u32) {
    let (mut read, mut write) = (0, 0);
    while read < ids.len() {
        if read + 1 < ids.len() && ids[read] == pair.0 && ids[read + 1] == pair.1 {
            ids[write] = id;
            read += 2;
        } else {
            ids[write] = ids[read];
            read += 1;
        }
        write += 1;
    }
    ids.truncate(write);
}

/// The parts of `text` between matches of `specials` (all of it if `None`).
fn split_out_specials<'t>(
    specials: Option<&fancy_regex::Regex>,
    text: &'t str,
) -> Result<Vec<&'t str>> {
    let Some(re) = specials else {
        return Ok(vec![text]);
    };
    let mut parts = Vec::new();
    let mut last = 0;
    for m in re.find_iter(text) {
        let m = m.map_err(regex_err(re))?;
        parts.push(&text[last..m.start()]);
        last = m.end();
    }
    parts.push(&text[last..]);
    Ok(parts)
}

/// A regex matching any of the special tokens, longest first.
fn specials_regex(specials: &[(String, u32)]) -> Result<Option<fancy_regex::Regex>> {
    if specials.is_empty() {
        return Ok(None);
    }
    let mut names: Vec<&str> = specials.iter().map(|(s, _)| s.as_str()).collect();
    names.sort_by_key(|s| Reverse(s.len()));
    let alternation: Vec<String> = names
        .iter()
        .map(|s| fancy_regex::escape(s).into_owned())
        .collect();
    compile(&alternation.join("|")).map(Some)
}

impl BpeTokenizer {
    /// Assemble a tokenizer and check that its parts agree.
    fn from_parts(
        vocab: Vec<Option<Token>>,
        merges: Vec<Merge>,
        special_tokens: Vec<(String, u32)>,
    ) -> Result<Self> {
        let mut byte_to_id = [None; 256];
        let mut str_to_id = HashMap::with_capacity(vocab.len());
        for (id, token) in vocab.iter().enumerate() {
            let id = id as u32;
            let name = match token {
                None => continue,
                Some(Token::Bytes(bytes)) => {
                    if let [b] = bytes[..] {
                        byte_to_id[b as usize] = Some(id);
                    }
                    encode_token(bytes)
                }
                Some(Token::Special(s)) => s.clone(),
            };
            if let Some(other) = str_to_id.insert(name.clone(), id) {
                return Err(TokenizerError::BadVocab(format!(
                    "ids {other} and {id} are both the token {name:?}"
                )));
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_to_id.iter().enumerate() {
            byte_ids[b] =
                id.ok_or_else(|| TokenizerError::BadVocab(format!("byte 0x{b:02x} has no token")))?;
        }
        let mut ranks = FxMap::default();
        for (rank, m) in merges.iter().enumerate() {
            for id in [m.pair.0, m.pair.1, m.id] {
                if !matches!(vocab.get(id as usize), Some(Some(Token::Bytes(_)))) {
                    return Err(TokenizerError::BadVocab(format!(
                        "merge {rank} ({:?} → {}) uses id {id}, which is not an ordinary token",
                        m.pair, m.id
                    )));
                }
            }
            // a pair listed twice keeps its first (lowest) rank
            ranks.entry(m.pair).or_insert((rank as u32, m.id));
        }
        let special_ids = special_tokens.iter().cloned().collect();
        Ok(BpeTokenizer {
            pattern: compile(GPT2_SPLIT_PATTERN)?,
            specials_pattern: specials_regex(&special_tokens)?,
            vocab,
            byte_to_id: byte_ids,
            merges,
            ranks,
            special_tokens,
            special_ids,
            str_to_id,
            cache: new_caches(),
        })
    }

    /// Train a tokenizer on `text` to `vocab_size` tokens in all: the 256
    /// bytes, `vocab_size - 256 - special_tokens.len()` merges, then the
    /// special tokens (GPT-2 counts the same way: 256 + 50000 + 1 = 50257).
    ///
    /// Special tokens in `text` are cut out and not learned from. At each
    /// step the most frequent pair is merged (ties go to the smaller pair of
    /// ids). Training stops early if no pair is left to merge.
    ///
    /// ```
    /// use llm_core::text::tokenizer::{BpeTokenizer, Tokenizer};
    ///
    /// let t = BpeTokenizer::train("aaab aaab aaab", 256 + 2, &[])?;
    /// // "aa" is the most frequent pair; then "aa"+"a" and "a"+"b" tie, and
    /// // the pair of smaller ids wins
    /// let learned: Vec<&[u8]> = t.merges().iter().filter_map(|m| t.token_bytes(m.id)).collect();
    /// assert_eq!(learned, [&b"aa"[..], &b"ab"[..]]);
    /// assert_eq!(t.encode("aaab")?.len(), 2); // "aa" + "ab"
    /// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
    /// ```
    pub fn train(text: &str, vocab_size: usize, special_tokens: &[&str]) -> Result<Self> {
        let mut seen = HashSet::new();
        for s in special_tokens {
            if s.is_empty() || !seen.insert(*s) {
                return Err(TokenizerError::Training(format!(
                    "special token {s:?} is empty or given twice"
                )));
            }
            if !super::byte_level::looks_special(s) {
                return Err(TokenizerError::Training(format!(
                    "special token {s:?} must be written <...> or [...] (such as <|endoftext|>), so that GPT-2's file format can tell it from ordinary tokens"
                )));
            }
        }
        let Some(target) = vocab_size
            .checked_sub(special_tokens.len())
            .filter(|&n| n >= 256)
        else {
            return Err(TokenizerError::Training(format!(
                "vocab_size {vocab_size} is smaller than the 256 bytes plus {} special tokens",
                special_tokens.len()
            )));
        };
        let pattern = compile(GPT2_SPLIT_PATTERN)?;
        let specials: Vec<(String, u32)> =
            special_tokens.iter().map(|s| (s.to_string(), 0)).collect();
        let specials_pattern = specials_regex(&specials)?;

        // 1. count the distinct pieces
        let mut piece_counts: FxMap<&str, i64> = FxMap::default();
        for chunk in split_out_specials(specials_pattern.as_ref(), text)? {
            for m in pattern.find_iter(chunk) {
                *piece_counts
                    .entry(m.map_err(regex_err(&pattern))?.as_str())
                    .or_default() += 1;
            }
        }
        let mut pieces: Vec<(&str, i64)> = piece_counts.into_iter().collect();
        pieces.sort_unstable(); // a fixed order, whatever the hash map's
        let freqs: Vec<i64> = pieces.iter().map(|&(_, n)| n).collect();
        let mut words: Vec<Vec<u32>> = pieces
            .iter()
            .map(|(p, _)| p.bytes().map(u32::from).collect())
            .collect();

        // 2. count every adjacent pair, and remember which pieces hold it
        let mut pair_counts: FxMap<(u32, u32), i64> = FxMap::default();
        let mut pieces_with: FxMap<(u32, u32), FxSet<usize>> = FxMap::default();
        for (i, word) in words.iter().enumerate() {
            for w in word.windows(2) {
                *pair_counts.entry((w[0], w[1])).or_default() += freqs[i];
                pieces_with.entry((w[0], w[1])).or_default().insert(i);
            }
        }
        // a max-heap on (count, smaller pair first); entries go stale when a
        // count drops and are corrected when they surface
        let mut heap: BinaryHeap<(i64, Reverse<(u32, u32)>)> = pair_counts
            .iter()
            .map(|(&pair, &n)| (n, Reverse(pair)))
            .collect();

        // 3. merge, most frequent pair first
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut id_of: HashMap<Vec<u8>, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i as u32))
            .collect();
        let mut merges: Vec<Merge> = Vec::with_capacity(target - 256);
        let mut merged_pairs: FxSet<(u32, u32)> = FxSet::default();
        while vocab.len() < target {
            let Some((count, Reverse(pair))) = heap.pop() else {
                break; // every piece is a single token
            };
            let current = pair_counts.get(&pair).copied().unwrap_or(0);
            if count != current {
                if current > 0 {
                    heap.push((current, Reverse(pair)));
                }
                continue;
            }
            let mut bytes = vocab[pair.0 as usize].clone();
            bytes.extend_from_slice(&vocab[pair.1 as usize]);
            // two different pairs can spell the same bytes: keep one id
            let id = match id_of.get(&bytes) {
                Some(&id) => id,
                None => {
                    let id = vocab.len() as u32;
                    id_of.insert(bytes.clone(), id);
                    vocab.push(bytes);
                    id
                }
            };
            if merged_pairs.insert(pair) {
                merges.push(Merge { pair, id });
            }
            // update the counts of the pieces that hold the pair
            let mut delta: FxMap<(u32, u32), i64> = FxMap::default();
            for i in pieces_with.remove(&pair).unwrap_or_default() {
                let word = &mut words[i];
                let f = freqs[i];
                for w in word.windows(2) {
                    *delta.entry((w[0], w[1])).or_default() -= f;
                }
                merge_pair(word, pair, id);
                for w in word.windows(2) {
                    *delta.entry((w[0], w[1])).or_default() += f;
                    pieces_with.entry((w[0], w[1])).or_default().insert(i);
                }
            }
            for (p, d) in delta {
                if d == 0 {
                    continue;
                }
                let n = pair_counts.entry(p).or_default();
                *n += d;
                let n = *n;
                if n <= 0 {
                    pair_counts.remove(&p);
                } else if d > 0 {
                    heap.push((n, Reverse(p)));
                }
            }
        }

        let mut entries: Vec<Option<Token>> =
            vocab.into_iter().map(|b| Some(Token::Bytes(b))).collect();
        let specials: Vec<(String, u32)> = special_tokens
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), (entries.len() + i) as u32))
            .collect();
        entries.extend(
            specials
                .iter()
                .map(|(s, _)| Some(Token::Special(s.clone()))),
        );
        Self::from_parts(entries, merges, specials)
    }

    /// GPT-2's tokenizer, from the data files `gpt2/encoder.json` and
    /// `gpt2/vocab.bpe` (see [`crate::data::path`]).
    pub fn gpt2() -> Result<Self> {
        let encoder = crate::data::path("gpt2/encoder.json")?;
        let vocab_bpe = crate::data::path("gpt2/vocab.bpe")?;
        Self::from_files(encoder, vocab_bpe)
    }

    /// Load `encoder.json` and `vocab.bpe` (GPT-2's format; see
    /// [`byte_level`](super::byte_level)). Entries of `encoder.json` that are
    /// neither a byte nor the result of a merge are special tokens.
    ///
    /// Errors name the file, and for `vocab.bpe` the line.
    pub fn from_files(encoder_json: impl AsRef<Path>, vocab_bpe: impl AsRef<Path>) -> Result<Self> {
        let (encoder_path, merges_path) = (encoder_json.as_ref(), vocab_bpe.as_ref());
        let encoder = read_encoder_json(encoder_path)?;
        let lines = read_vocab_bpe(merges_path, Some(&encoder))?;
        let specials = check_vocabulary(&encoder, &lines, encoder_path, merges_path)?;
        Self::from_parsed(&encoder, &lines, &specials, encoder_path, merges_path)
    }

    /// [`BpeTokenizer::from_files`] from the files' parsed and checked
    /// contents (the paths are for error messages).
    pub(crate) fn from_parsed(
        encoder: &HashMap<String, u32>,
        lines: &[MergeLine],
        specials: &[(String, u32)],
        encoder_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        let specials = specials.to_vec();
        let special_names: HashSet<&str> = specials.iter().map(|(s, _)| s.as_str()).collect();

        let size = encoder.values().max().map_or(0, |&m| m as usize + 1);
        let mut vocab: Vec<Option<Token>> = vec![None; size];
        for (token, &id) in encoder {
            vocab[id as usize] = Some(if special_names.contains(token.as_str()) {
                Token::Special(token.clone())
            } else {
                // not special, so it decodes (see `special_tokens`)
                Token::Bytes(decode_token(token).unwrap_or_default())
            });
        }
        // every byte has a token: checked by `check_vocabulary` above
        let mut merges = Vec::with_capacity(lines.len());
        for line in lines {
            let bad = |reason: String| TokenizerError::BadMerge {
                path: merges_path.to_path_buf(),
                line: line.line,
                reason,
            };
            let id = |token: &str| -> Result<u32> {
                if special_names.contains(token) {
                    return Err(bad(format!(
                        "token {token:?} is merged, but no merge produces it"
                    )));
                }
                encoder
                    .get(token)
                    .copied()
                    .ok_or_else(|| bad(format!("token {token:?} is not in the vocabulary")))
            };
            merges.push(Merge {
                pair: (id(&line.left)?, id(&line.right)?),
                id: id(&format!("{}{}", line.left, line.right))?,
            });
        }
        Self::from_parts(vocab, merges, specials).map_err(|e| match e {
            TokenizerError::BadVocab(reason) => TokenizerError::bad_file(encoder_path, reason),
            other => other,
        })
    }

    /// Load `dir/encoder.json` and `dir/vocab.bpe` (as written by [`BpeTokenizer::save`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::from_files(dir.join("encoder.json"), dir.join("vocab.bpe"))
    }

    /// Save as `dir/encoder.json` and `dir/vocab.bpe` in GPT-2's format
    /// (each file written atomically; `dir` is created if needed).
    ///
    /// ```
    /// use llm_core::text::tokenizer::{BpeTokenizer, Tokenizer};
    ///
    /// let t = BpeTokenizer::train("hello hello help", 256 + 4 + 1, &["<|endoftext|>"])?;
    /// let dir = std::env::temp_dir().join(format!("bpe-doc-{}", std::process::id()));
    /// t.save(&dir)?;
    /// let loaded = BpeTokenizer::load(&dir)?;
    /// assert_eq!(loaded.merges(), t.merges());
    /// assert_eq!(loaded.encode("help<|endoftext|>")?, t.encode("help<|endoftext|>")?);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
    /// ```
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let mut encoder = String::from("{");
        for (id, token) in self.vocab.iter().enumerate() {
            let name = match token {
                None => continue,
                Some(Token::Bytes(bytes)) => encode_token(bytes),
                Some(Token::Special(s)) => s.clone(),
            };
            if encoder.len() > 1 {
                encoder.push_str(", ");
            }
            // a JSON string literal: serialising a str cannot fail
            encoder.push_str(&serde_json::Value::String(name).to_string());
            encoder.push_str(&format!(": {id}"));
        }
        encoder.push('}');
        let mut merges = String::from("#version: 0.2\n");
        for m in &self.merges {
            let left = self.token_bytes(m.pair.0).unwrap_or_default();
            let right = self.token_bytes(m.pair.1).unwrap_or_default();
            merges.push_str(&encode_token(left));
            merges.push(' ');
            merges.push_str(&encode_token(right));
            merges.push('\n');
        }
        crate::files::write_bytes(dir.join("encoder.json"), encoder.as_bytes())?;
        crate::files::write_bytes(dir.join("vocab.bpe"), merges.as_bytes())?;
        Ok(())
    }

    /// The merges in the order they were learned (rank 0 first).
    pub fn merges(&self) -> &[Merge] {
        &self.merges
    }

    /// The special tokens and their ids.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.special_tokens
    }

    /// The bytes of an ordinary token (`None` for special tokens and
    /// unknown ids).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match self.vocab.get(id as usize) {
            Some(Some(Token::Bytes(b))) => Some(b),
            _ => None,
        }
    }

    /// Apply the merges to one piece's bytes: repeatedly merge the adjacent
    /// pair of lowest rank (every occurrence of it, left to right) until no
    /// pair has a merge.
    ///
    /// ```
    /// use llm_core::text::tokenizer::BpeTokenizer;
    /// let t = BpeTokenizer::train("abab abab", 256 + 1, &[])?;
    /// let ab = t.merges()[0].id;
    /// assert_eq!(t.apply_merges(b"abxab"), [ab, b'x' as u32, ab]);
    /// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
    /// ```
    pub fn apply_merges(&self, bytes: &[u8]) -> Vec<u32> {
        if bytes.len() > LONG_PIECE {
            self.apply_merges_heap(bytes)
        } else {
            self.apply_merges_scan(bytes)
        }
    }

    /// [`BpeTokenizer::apply_merges`] as written: rescan the piece for the
    /// lowest-rank pair before each merge. Quadratic, but fastest for the
    /// short pieces of ordinary text.
    fn apply_merges_scan(&self, bytes: &[u8]) -> Vec<u32> {
        let mut ids: Vec<u32> = bytes.iter().map(|&b| self.byte_to_id[b as usize]).collect();
        while ids.len() >= 2 {
            let best = ids
                .windows(2)
                .filter_map(|w| {
                    self.ranks
                        .get(&(w[0], w[1]))
                        .map(|&(rank, id)| (rank, (w[0], w[1]), id))
                })
                .min();
            let Some((_, pair, id)) = best else { break };
            merge_pair(&mut ids, pair, id);
        }
        ids
    }

    /// The same result in O(n log n) for long pieces (a long run of letters
    /// would take minutes rescanned): the tokens form a linked list, and a
    /// min-heap holds every mergeable pair by (rank, position). Popping in
    /// that order merges all occurrences of the lowest-rank pair left to
    /// right; a pair created meanwhile whose rank is lower than the one
    /// being merged waits until that rank is done, exactly as the next
    /// rescan would find it.
    fn apply_merges_heap(&self, bytes: &[u8]) -> Vec<u32> {
        const NONE: usize = usize::MAX;
        let n = bytes.len();
        let mut ids: Vec<u32> = bytes.iter().map(|&b| self.byte_to_id[b as usize]).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
        // (rank, position of the left token, left id, right id)
        type Entry = (u32, usize, u32, u32);
        let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::with_capacity(n);
        for (i, w) in ids.windows(2).enumerate() {
            if let Some(&(rank, _)) = self.ranks.get(&(w[0], w[1])) {
                heap.push(Reverse((rank, i, w[0], w[1])));
            }
        }
        let mut pass: Option<u32> = None; // the rank being merged
        let mut waiting: Vec<Entry> = Vec::new();
        loop {
            let Some(Reverse(entry)) = heap.pop() else {
                if waiting.is_empty() {
                    break;
                }
                heap.extend(waiting.drain(..).map(Reverse));
                pass = None;
                continue;
            };
            let (rank, at, left, right) = entry;
            let j = next[at];
            // stale: the left token was merged away (a removed token has no
            // `next`) or changed, or its right neighbour is no longer `right`
            if j == NONE || ids[at] != left || ids[j] != right {
                continue;
            }
            if pass != Some(rank) {
                if !waiting.is_empty() {
                    heap.push(Reverse(entry));
                    heap.extend(waiting.drain(..).map(Reverse));
                    pass = None;
                    continue;
                }
                pass = Some(rank);
            }
            let Some(&(_, id)) = self.ranks.get(&(left, right)) else {
                continue;
            };
            // merge `at` and `j` into `at`; `j` leaves the list
            ids[at] = id;
            let k = next[j];
            next[at] = k;
            next[j] = NONE; // `j` is removed
            if k != NONE {
                prev[k] = at;
            }
            let mut push = |pos: usize, a: u32, b: u32| {
                if let Some(&(r, _)) = self.ranks.get(&(a, b)) {
                    if r < rank {
                        waiting.push((r, pos, a, b));
                    } else {
                        heap.push(Reverse((r, pos, a, b)));
                    }
                }
            };
            if prev[at] != NONE {
                let p = prev[at];
                push(p, ids[p], id);
            }
            if k != NONE {
                push(at, id, ids[k]);
            }
        }
        let mut out = Vec::new();
        let mut i = 0; // the first token is never merged away
        while i != NONE && n > 0 {
            out.push(ids[i]);
            i = next[i];
        }
        out
    }

    /// Run `f` with a piece cache no other thread holds; if every one is
    /// held, with an empty one of its own.
    fn with_cache<T>(&self, f: impl FnOnce(&mut FxMap<String, Vec<u32>>) -> T) -> T {
        for slot in self.cache.iter() {
            match slot.try_lock() {
                Ok(mut cache) => return f(&mut cache),
                Err(TryLockError::Poisoned(poisoned)) => {
                    let mut cache = poisoned.into_inner();
                    cache.clear();
                    return f(&mut cache);
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        f(&mut FxMap::default())
    }

    /// Pre-tokenize `text` and append each piece's ids to `out`.
    fn encode_chunk(
        &self,
        text: &str,
        cache: &mut FxMap<String, Vec<u32>>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        for m in self.pattern.find_iter(text) {
            let piece = m.map_err(regex_err(&self.pattern))?.as_str();
            if let [b] = piece.as_bytes() {
                out.push(self.byte_to_id[*b as usize]);
            } else if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
            } else {
                let ids = self.apply_merges(piece.as_bytes());
                out.extend_from_slice(&ids);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(piece.to_string(), ids);
            }
        }
        Ok(())
    }

    /// Encode `text` with special tokens treated as ordinary text.
    ///
    /// ```
    /// use llm_core::text::tokenizer::{BpeTokenizer, Tokenizer};
    /// let t = BpeTokenizer::train("x", 257, &["<|endoftext|>"])?;
    /// assert_eq!(t.encode("<|endoftext|>")?, [256]);
    /// assert_eq!(t.encode_ordinary("<|endoftext|>")?.len(), 13);
    /// # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
    /// ```
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3);
        self.with_cache(|cache| self.encode_chunk(text, cache, &mut out))?;
        Ok(out)
    }

    /// The bytes of a sequence of ids (special tokens as their text).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.vocab.get(id as usize) {
                Some(Some(Token::Bytes(b))) => out.extend_from_slice(b),
                Some(Some(Token::Special(s))) => out.extend_from_slice(s.as_bytes()),
                _ => {
                    return Err(TokenizerError::UnknownId {
                        id: id.into(),
                        vocab_size: self.vocab.len(),
                    })
                }
            }
        }
        Ok(out)
    }
}

impl Tokenizer for BpeTokenizer {
    /// Encode `text`, recognising the special tokens anywhere in it.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let Some(specials) = &self.specials_pattern else {
            return self.encode_ordinary(text);
        };
        let mut out = Vec::with_capacity(text.len() / 3);
        self.with_cache(|cache| {
            let mut last = 0;
            for m in specials.find_iter(text) {
                let m = m.map_err(regex_err(specials))?;
                self.encode_chunk(&text[last..m.start()], cache, &mut out)?;
                if let Some(&id) = self.special_ids.get(m.as_str()) {
                    out.push(id);
                }
                last = m.end();
            }
            self.encode_chunk(&text[last..], cache, &mut out)
        })?;
        Ok(out)
    }

    /// Decode ids to text. A cut through a multi-byte character (possible
    /// when decoding part of a sequence) shows as U+FFFD, as tiktoken's
    /// `errors="replace"`.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.str_to_id.get(token).copied()
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        match self.vocab.get(id as usize)? {
            Some(Token::Bytes(b)) => Some(encode_token(b)),
            Some(Token::Special(s)) => Some(s.clone()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_pair_merges_left_to_right() {
        let _rng = crate::rng_lock();
        let mut ids = vec![1, 1, 1, 2, 1, 1];
        merge_pair(&mut ids, (1, 1), 9);
        assert_eq!(ids, [9, 1, 2, 9]);
    }

    #[test]
    fn training_counts_distinct_pieces_weighted() {
        let _rng = crate::rng_lock();
        // pieces "ab" (once) and " ab" (three times): "a"+"b" occurs 4
        // times, " "+"a" 3 times, so "ab" comes first, then " "+"ab"
        let t = BpeTokenizer::train("ab ab ab ab", 256 + 2, &[]).unwrap();
        let m = t.merges();
        assert_eq!(m[0].pair, (b'a' as u32, b'b' as u32));
        assert_eq!(t.token_bytes(m[1].id), Some(&b" ab"[..]));
        assert_eq!(t.encode(" ab ab").unwrap(), [m[1].id, m[1].id]);
    }

    #[test]
    fn training_stops_when_nothing_is_left_to_merge() {
        let _rng = crate::rng_lock();
        let t = BpeTokenizer::train("ab", 1000, &[]).unwrap();
        assert_eq!(t.merges().len(), 1);
        assert_eq!(t.vocab_size(), 257);
    }

    #[test]
    fn bad_training_requests_are_errors() {
        let _rng = crate::rng_lock();
        assert!(BpeTokenizer::train("x", 255, &[]).is_err());
        assert!(BpeTokenizer::train("x", 256, &["<s>"]).is_err());
        assert!(BpeTokenizer::train("x", 300, &["<s>", "<s>"]).is_err());
    }

    #[test]
    fn special_tokens_are_not_learned_from() {
        let _rng = crate::rng_lock();
        let text = "<|endoftext|><|endoftext|><|endoftext|>ab";
        let t = BpeTokenizer::train(text, 256 + 1 + 1, &["<|endoftext|>"]).unwrap();
        assert_eq!(t.token_bytes(t.merges()[0].id), Some(&b"ab"[..]));
        assert_eq!(t.special_tokens(), [("<|endoftext|>".to_string(), 257)]);
        assert_eq!(t.token_to_id("<|endoftext|>"), Some(257));
        assert_eq!(t.id_to_token(257).as_deref(), Some("<|endoftext|>"));
    }

    proptest::proptest! {
        #[test]
        fn heap_merging_equals_rescanning(text in "[a-e]{0,300}|[ab]{0,200}|[a-c ]{0,200}") {
            let _rng = crate::rng_lock();
            let t = trained_on_letters();
            proptest::prop_assert_eq!(t.apply_merges_heap(text.as_bytes()), t.apply_merges_scan(text.as_bytes()));
        }
    }

    /// A tokenizer with many merges, some over long repeats.
    fn trained_on_letters() -> &'static BpeTokenizer {
        static T: std::sync::OnceLock<BpeTokenizer> = std::sync::OnceLock::new();
        T.get_or_init(|| {
            let mut x: u64 = 88172645463325252;
            let mut text = String::new();
            for i in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet: &[u8] = if i % 3 == 0 { b"ab" } else { b"abcde" };
                text.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
                if x.is_multiple_of(17) {
                    text.push(' ');
                }
            }
            BpeTokenizer::train(&text, 256 + 400, &[]).unwrap()
        })
    }

    #[test]
    fn heap_merging_keeps_rescan_order_for_out_of_order_merges() {
        let _rng = crate::rng_lock();
        // rank 0 merges "ab"+"a", but "ab" is only made by rank 1: on
        // "abab" a rescan first makes both "ab"s, and then "ab"+"a" no
        // longer occurs
        let mut vocab: Vec<Option<Token>> =
            (0..=255u8).map(|b| Some(Token::Bytes(vec![b]))).collect();
        vocab.push(Some(Token::Bytes(b"ab".to_vec())));
        vocab.push(Some(Token::Bytes(b"aba".to_vec())));
        let merges = vec![
            Merge {
                pair: (256, 97),
                id: 257,
            },
            Merge {
                pair: (97, 98),
                id: 256,
            },
        ];
        let t = BpeTokenizer::from_parts(vocab, merges, vec![]).unwrap();
        assert_eq!(t.apply_merges_scan(b"abab"), [256, 256]);
        assert_eq!(t.apply_merges_heap(b"abab"), [256, 256]);
        assert_eq!(t.apply_merges_heap(b"aba"), [257]);
    }

    #[test]
    fn unknown_id_is_named() {
        let _rng = crate::rng_lock();
        let t = BpeTokenizer::train("ab", 257, &[]).unwrap();
        let err = t.decode(&[97, 300]).unwrap_err().to_string();
        assert!(err.contains("id 300"), "{err}");
    }
}
