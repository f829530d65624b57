//! Byte pair encoding from scratch, the version to read (the size of
//! Karpathy's minbpe, the book's bonus `BPETokenizerSimple`). It learns the
//! same merges and gives the same ids as the fast [`super::BpeTokenizer`]
//! (a test checks), which adds the speed machinery: incremental pair counts,
//! a heap, a cache, GPT-2's file format.
//!
//! The whole algorithm:
//!
//! 1. Text is UTF-8 bytes; the 256 byte values are the first 256 tokens.
//! 2. GPT-2's regex cuts the text into pieces (a word with its leading
//!    space, a number, punctuation, whitespace); special tokens such as
//!    `<|endoftext|>` are cut out first. Merges never cross a piece.
//! 3. Training: count every adjacent pair of tokens ([`get_stats`]), merge
//!    the most frequent one into a new token everywhere ([`merge`]), and
//!    repeat until the vocabulary is full.
//! 4. Encoding: in each piece, apply the merge learned earliest among its
//!    pairs, until none applies. Decoding joins the tokens' bytes.
//!
//! ```
//! use llm_core::text::tokenizer::bpe_simple::{get_stats, merge, BpeTokenizerSimple};
//!
//! let ids = [1, 2, 3, 1, 2];
//! assert_eq!(get_stats(&ids)[&(1, 2)], 2);
//! assert_eq!(merge(&ids, (1, 2), 4), [4, 3, 4]);
//!
//! let tokenizer = BpeTokenizerSimple::train("aaab aaab aaab", 256 + 2, &[])?;
//! assert_eq!(tokenizer.merges, [((97, 97), 256), ((97, 98), 257)]); // "aa", then "ab"
//! let ids = tokenizer.encode("aaab")?;
//! assert_eq!(ids, [256, 257]);
//! assert_eq!(tokenizer.decode(&ids)?, "aaab");
//! # Ok::<(), llm_core::text::tokenizer::TokenizerError>(())
//! ```

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::bpe::GPT2_SPLIT_PATTERN;
use super::{compile, regex_err, Result, TokenizerError};

/// How often each adjacent pair occurs in `ids` (minbpe's `get_stats`).
pub fn get_stats(ids: &[u32]) -> BTreeMap<(u32, u32), usize> {
    let mut counts = BTreeMap::new();
    add_stats(ids, &mut counts);
    counts
}

fn add_stats(ids: &[u32], counts: &mut BTreeMap<(u32, u32), usize>) {
    for pair in ids.windows(2) {
        *counts.entry((pair[0], pair[1])).or_insert(0) += 1;
    }
}

/// `ids` with every occurrence of `pair`, left to right, replaced by `id`.
pub fn merge(ids: &[u32], pair: (u32, u32), id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    let mut i = 0;
    while i < ids.len() {
        if i + 1 < ids.len() && (ids[i], ids[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(ids[i]);
            i += 1;
        }
    }
    out
}

/// A byte-level BPE tokenizer, trained here. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct BpeTokenizerSimple {
    /// The merges in the order they were learned: `(pair, new id)`.
    pub merges: Vec<((u32, u32), u32)>,
    /// The bytes of every ordinary token, by id.
    pub vocab: Vec<Vec<u8>>,
    /// The special tokens and their ids (after the ordinary tokens).
    pub special_tokens: Vec<(String, u32)>,
}

/// `text` split into the parts between special tokens, and what follows
/// each part (the special token's id, or `None` at the end).
fn split_specials<'t>(text: &'t str, specials: &[(String, u32)]) -> Vec<(&'t str, Option<u32>)> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        // the special token that starts first (the longest on a tie)
        let next = specials
            .iter()
            .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, Reverse(s.len()), *id)))
            .min();
        match next {
            Some((at, Reverse(len), id)) => {
                parts.push((&rest[..at], Some(id)));
                rest = &rest[at + len..];
            }
            None => {
                parts.push((rest, None));
                return parts;
            }
        }
    }
}

/// The regex pieces of `text`, each as its bytes.
fn pieces(text: &str) -> Result<Vec<Vec<u32>>> {
    let pattern = compile(GPT2_SPLIT_PATTERN)?;
    pattern
        .find_iter(text)
        .map(|m| {
            Ok(m.map_err(regex_err(&pattern))?
                .as_str()
                .bytes()
                .map(u32::from)
                .collect())
        })
        .collect()
}

impl BpeTokenizerSimple {
    /// Learn `vocab_size - 256 - special_tokens.len()` merges from `text`
    /// (fewer if no pair is left); the special tokens take the ids after
    /// them. Ties between equally frequent pairs go to the smaller pair.
    pub fn train(text: &str, vocab_size: usize, special_tokens: &[&str]) -> Result<Self> {
        let target = vocab_size
            .checked_sub(special_tokens.len())
            .filter(|&n| n >= 256)
            .ok_or_else(|| {
                TokenizerError::Training(format!(
                    "vocab_size {vocab_size} is smaller than the 256 bytes plus {} special tokens",
                    special_tokens.len()
                ))
            })?;
        let specials: Vec<(String, u32)> =
            special_tokens.iter().map(|s| (s.to_string(), 0)).collect();
        let mut chunks = Vec::new();
        for (part, _) in split_specials(text, &specials) {
            chunks.extend(pieces(part)?);
        }
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut merges = Vec::new();
        while vocab.len() < target {
            let mut stats = BTreeMap::new();
            for chunk in &chunks {
                add_stats(chunk, &mut stats);
            }
            // the most frequent pair; on a tie, the smaller pair
            let Some((&pair, _)) = stats.iter().max_by_key(|&(&pair, &n)| (n, Reverse(pair)))
            else {
                break; // every piece is a single token
            };
            let bytes = [&vocab[pair.0 as usize][..], &vocab[pair.1 as usize]].concat();
            // two different pairs can spell the same bytes: they share one token
            let id = match vocab.iter().position(|b| *b == bytes) {
                Some(id) => id as u32,
                None => {
                    vocab.push(bytes);
                    vocab.len() as u32 - 1
                }
            };
            if !merges.iter().any(|&(p, _)| p == pair) {
                merges.push((pair, id));
            }
            chunks = chunks.iter().map(|c| merge(c, pair, id)).collect();
        }
        let special_tokens = special_tokens
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), (vocab.len() + i) as u32))
            .collect();
        Ok(BpeTokenizerSimple {
            merges,
            vocab,
            special_tokens,
        })
    }

    /// Text to ids: special tokens by their ids, every piece in between by
    /// applying the merges, earliest learned first.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for (part, special) in split_specials(text, &self.special_tokens) {
            for mut piece in pieces(part)? {
                // the pair of this piece that was merged first, until none is left
                while let Some(&(pair, id)) = self
                    .merges
                    .iter()
                    .find(|(pair, _)| piece.windows(2).any(|w| (w[0], w[1]) == *pair))
                {
                    piece = merge(&piece, pair, id);
                }
                ids.extend(piece);
            }
            ids.extend(special);
        }
        Ok(ids)
    }

    /// Ids to text (a cut through a multi-byte character shows as U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let special = self.special_tokens.iter().find(|(_, i)| *i == id);
            match (self.vocab.get(id as usize), special) {
                (Some(b), _) => bytes.extend_from_slice(b),
                (None, Some((s, _))) => bytes.extend_from_slice(s.as_bytes()),
                (None, None) => {
                    return Err(TokenizerError::UnknownId {
                        id: id.into(),
                        vocab_size: self.vocab.len() + self.special_tokens.len(),
                    })
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
